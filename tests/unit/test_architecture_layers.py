"""The architecture as tests (docs/architecture.md, 'Layers'): stages only import down, no
source file is over 600 lines, and every command's ``--help`` runs.

Layers, bottom to top: ``joulestream.schemas`` imports nothing of ours; the shared core (every
other module directly under ``joulestream``: settings, kafka, options, signals, ...) imports
only schemas; ``agents``, ``models`` and ``sinks`` import only core and schemas (not each
other); ``stream_processors`` adds ``models``; ``commands`` and ``cli`` may import anything.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from joulestream import cli

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "joulestream"
MAX_LINES = 600

STAGES = ("schemas", "agents", "models", "sinks", "stream_processors", "commands", "cli")
ANYTHING = frozenset({"core", *STAGES})
# layer -> the layers its modules may import (a layer may always import itself)
ALLOWED: dict[str, frozenset[str]] = {
    "schemas": frozenset(),
    "core": frozenset({"schemas"}),
    "agents": frozenset({"core", "schemas"}),
    "models": frozenset({"core", "schemas"}),
    "sinks": frozenset({"core", "schemas"}),
    "stream_processors": frozenset({"models", "core", "schemas"}),
    "commands": ANYTHING,
    "cli": ANYTHING,
}


def layer_of(module: str) -> str:
    """The layer of a dotted module name under PACKAGE (``joulestream.x.y`` -> x or core)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STAGES else "core"


def python_files(root: Path) -> Iterator[Path]:
    """Every .py file under root, through the symlinked stage folders (followlinks)."""
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                yield Path(folder) / name


def module_name(path: Path, source_root: Path) -> str:
    parts = list(path.relative_to(source_root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int

    def __str__(self) -> str:
        return (
            f"{self.importer}:{self.line} ({layer_of(self.importer)}) imports "
            f"{self.imported} ({layer_of(self.imported)})"
        )


def imports_of(path: Path, module: str, package: str, known: set[str]) -> Iterator[Import]:
    """Our modules that ``module`` imports, anywhere in the file (top level, in functions,
    under TYPE_CHECKING): ``from a import b`` counts as ``a.b`` when that is one of the
    ``known`` modules (decided by the files, so no import runs)."""
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), str(path))
    base = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == package or alias.name.startswith(package + "."):
                    yield Import(module, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base.split(".")[: len(base.split(".")) - (node.level - 1)]
                target = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target != package and not target.startswith(package + "."):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                yield Import(module, sub if sub in known else target, node.lineno)


def upward_imports(source_root: Path, package: str = PACKAGE) -> list[Import]:
    """Every import of ours in the package that its layer may not make."""
    files = {module_name(p, source_root): p for p in python_files(source_root / package)}
    bad = []
    for module, path in sorted(files.items()):
        for found in imports_of(path, module, package, set(files)):
            importer, imported = layer_of(found.importer), layer_of(found.imported)
            if imported != importer and imported not in ALLOWED[importer]:
                bad.append(found)
    return bad


def test_no_stage_imports_upward_or_sideways() -> None:
    bad = upward_imports(REPO)
    assert not bad, "imports against the layer rule:\n" + "\n".join(map(str, bad))


def test_the_checker_finds_planted_upward_and_sideways_imports(tmp_path: Path) -> None:
    """The rule check itself: a tree with an upward import in a function, a sideways one,
    a relative one, and allowed ones; only the first three are reported."""
    files = {
        "joulestream/__init__.py": "",
        "joulestream/settings.py": "from joulestream.schemas import codec\n",
        "joulestream/schemas/__init__.py": "",
        "joulestream/schemas/codec.py": "def f():\n    from joulestream.sinks import store\n",
        "joulestream/sinks/__init__.py": "",
        "joulestream/sinks/store.py": "import joulestream.settings\n",
        "joulestream/agents/__init__.py": "",
        "joulestream/agents/agent.py": "from ..sinks import store\n",
        "joulestream/models/__init__.py": "",
        "joulestream/models/m.py": "from ..stream_processors.app import x\n",
        "joulestream/stream_processors/__init__.py": "",
        "joulestream/stream_processors/app.py": "from joulestream.models import m\nx = 1\n",
        "joulestream/commands/__init__.py": "",
        "joulestream/commands/up.py": "from joulestream.agents import agent\nimport joulestream",
        "joulestream/cli.py": "from joulestream.commands import up\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = {(i.importer, i.imported, i.line) for i in upward_imports(tmp_path)}
    assert found == {
        ("joulestream.schemas.codec", "joulestream.sinks.store", 2),
        ("joulestream.agents.agent", "joulestream.sinks.store", 1),
        ("joulestream.models.m", "joulestream.stream_processors.app", 1),
    }


def _too_long(root: Path) -> list[str]:
    return [
        f"{path.relative_to(REPO)}: {n} lines"
        for path in python_files(root)
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    ]


def test_no_source_file_is_over_600_lines() -> None:
    long = _too_long(REPO / PACKAGE) + _too_long(REPO / "bench")
    assert not long, f"files over {MAX_LINES} lines (split them by concern):\n" + "\n".join(long)


def _command_paths() -> Iterator[list[str]]:
    """Every command and subcommand, as argv prefixes (``['sink', 'prometheus']``)."""

    def walk(parser: argparse.ArgumentParser, path: list[str]) -> Iterator[list[str]]:
        yield path
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    yield from walk(child, [*path, name])

    for name, _module, _help in cli._COMMANDS:
        parser = cli.build_parser([name])
        command = next(
            a for a in parser._actions if isinstance(a, argparse._SubParsersAction)
        ).choices[name]
        yield from walk(command, [name])


COMMAND_PATHS = list(_command_paths())


def test_the_command_list_reaches_subcommands() -> None:
    assert {"sink prometheus", "kafka start", "topics create"} <= {
        " ".join(p) for p in COMMAND_PATHS
    }


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=" ".join)
def test_every_command_help_runs(path: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    argv = [*path, "--help"]
    with pytest.raises(SystemExit) as stopped:
        cli.build_parser(argv).parse_args(argv)
    assert stopped.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: joulestream " + " ".join(path))


def _this_tree_first() -> dict[str, str]:
    """The environment of a fresh interpreter that imports this checkout's code."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }


HEAVY = ("pyarrow", "psycopg", "faust", "aiokafka", "sklearn", "matplotlib")
_LOADED = """
import sys
from joulestream import cli
argv = sys.argv[1:]
try:
    cli.build_parser(argv).parse_args(argv)
except SystemExit as stop:
    assert stop.code == 0, stop.code
print(" ".join(sorted({name.partition(".")[0] for name in sys.modules})))
"""


@pytest.mark.parametrize(
    ("argv", "unwanted"),
    [
        (["sink", "prometheus", "--help"], HEAVY),
        (["agent", "--help"], HEAVY),
        (["sink", "store", "--help"], ("pyarrow", "faust", "sklearn", "matplotlib")),
    ],
    ids=" ".join,
)
def test_a_command_loads_only_what_it_runs(argv: list[str], unwanted: tuple[str, ...]) -> None:
    """In a fresh interpreter (this one has imported everything): parsing a command's
    options imports none of the heavy libraries it does not use."""
    env = _this_tree_first()
    done = subprocess.run(
        [sys.executable, "-c", _LOADED, *argv], capture_output=True, text=True, env=env, check=True
    )
    loaded = set(done.stdout.split())
    assert "joulestream" in loaded and "argparse" in loaded  # the probe saw the imports
    assert not loaded & set(unwanted), f"{' '.join(argv)} imports {sorted(loaded & set(unwanted))}"


def test_the_agent_runs_without_numpy_or_the_processors_libraries() -> None:
    """What ``python -m joulestream.agents`` imports stays light: numpy alone added ~12 MiB to
    an agent's resident set (its target is 64 MiB with eBPF, 40 MiB on procfs)."""
    probe = "import sys, joulestream.agents.agent; print(' '.join(sorted(sys.modules)))"
    env = _this_tree_first()
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True
    )
    loaded = {name.partition(".")[0] for name in done.stdout.split()}
    assert "confluent_kafka" in loaded  # the probe saw the agent's imports
    assert not loaded & {"numpy", *HEAVY}, sorted(loaded & {"numpy", *HEAVY})


_BARE_IMPORTS = """
import importlib, pkgutil, sys
BARE = {"agents", "schemas", "sinks", "models", "stream_processors"}

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name in BARE:
            raise ImportError(f"bare top-level import of {name!r}", name=name)
        return None

sys.meta_path.insert(0, Refuse())
import joulestream
for info in pkgutil.walk_packages(joulestream.__path__, "joulestream."):
    try:
        importlib.import_module(info.name)
    except ImportError as error:
        if error.name in BARE:
            print(info.name, error)
    except Exception:
        pass  # a module that needs a service or a device to import is not this test's concern
"""


def test_no_module_reaches_a_folder_by_its_bare_name() -> None:
    """The folders install only under ``joulestream``: a module (or a resource look-up) that
    names ``schemas`` or ``agents`` bare works from a checkout, where the repository root is on
    sys.path, and fails in an installed package (the processor died so in a fresh clone)."""
    done = subprocess.run(
        [sys.executable, "-c", _BARE_IMPORTS], capture_output=True, text=True, check=True
    )
    assert done.stdout == "", done.stdout


ONE_PLACE = {
    # what must be said in one place only -> (pattern, the file that says it)
    "the record alias": (re.compile(r"^Record = dict\[", re.M), "joulestream/schemas/__init__.py"),
    "a node key": (
        re.compile(r"""f["'][^"']*\{[^}]*cluster[^}]*\}/\{[^}]*node[^}]*\}"""),
        "joulestream/schemas/__init__.py",
    ),
    "a time parser": (re.compile(r"^def parse_time\b", re.M), "joulestream/times.py"),
    "a positive-number option type": (
        re.compile(r"^def _?positive\w*\(", re.M),
        "joulestream/options.py",
    ),
    "a /metrics server": (
        re.compile(r"^class MetricsServer\b|start_http_server\(", re.M),
        "joulestream/metrics_server.py",
    ),
}


@pytest.mark.parametrize("thing", ONE_PLACE)
def test_one_thing_is_said_in_one_place(thing: str) -> None:
    pattern, home = ONE_PLACE[thing]
    elsewhere = [
        f"{path.relative_to(REPO)}:{path.read_text()[: m.start()].count(chr(10)) + 1}"
        for root in (REPO / PACKAGE, REPO / "bench")
        for path in python_files(root)
        for m in pattern.finditer(path.read_text())
        if path.relative_to(REPO).as_posix() != home
    ]
    assert not elsewhere, f"{thing} belongs in {home} only:\n" + "\n".join(elsewhere)
