# The two commands of the README. Both do all set-up first (scripts/setup.sh).
.PHONY: run test setup lint

setup:
	@scripts/setup.sh

run: setup
	.venv/bin/joulestream up

test: setup
	.venv/bin/python -m pytest -q -n 2 --dist loadfile

lint: setup
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy .
