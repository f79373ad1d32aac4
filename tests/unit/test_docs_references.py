"""The repository explains itself: no file points at a document outside it, and every citation
of docs/architecture.md names a section that exists there (docs/architecture.md, 'Layers')."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARCHITECTURE = ROOT / "docs" / "architecture.md"

# Written in pieces so that this file does not match itself.
OUTSIDE = re.compile(
    "|".join(
        (
            re.escape("DESIGN" + ".md"),
            re.escape(".." + "/shared"),
            re.escape("/work" + "/"),
            "\u00a7" + r"\s*\d",  # section sign + number: how an outside document was cited
        )
    )
)
CITATION = re.compile(r"docs/architecture\.md")
# After the path: ", 'Name'", optionally more names joined by "," or "and", across a line break
# and a comment marker ("#", "//", "*") or a docstring's indentation, also inside a name.
_GAP = r"[\s#/*]*"
_NAME = r"'[^']{1,60}'"
NAMES = re.compile(rf",?{_GAP}({_NAME}(?:{_GAP}(?:,|and){_GAP}{_NAME})*)")
NAME = re.compile(r"'([^']{1,60})'")
_WRAP = re.compile(r"\s*\n[\s#/*]*")


def cited_names(text: str) -> list[str]:
    """The section names of a run of quoted names, each unwrapped to one line."""
    return [_WRAP.sub(" ", name) for name in NAME.findall(text)]


def tracked_files() -> list[Path]:
    """The files git tracks (a checkout without git: every file outside hidden directories)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return [
            p
            for p in ROOT.rglob("*")
            if p.is_file()
            and not any(
                part.startswith(".") or part == "__pycache__" for part in p.parts[len(ROOT.parts) :]
            )
        ]
    paths = [ROOT / name for name in listed.decode().split("\0") if name]
    return [p for p in paths if p.is_file() and not p.is_symlink()]


def text_of(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None  # binary files cite nothing


def sections() -> set[str]:
    return {
        line[3:].strip()
        for line in ARCHITECTURE.read_text(encoding="utf-8").splitlines()
        if line.startswith("## ")
    }


def test_no_file_references_a_path_outside_the_repository() -> None:
    found = []
    for path in tracked_files():
        text = text_of(path)
        if text is None:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            match = OUTSIDE.search(line)
            if match:
                found.append(f"{path.relative_to(ROOT)}:{number}: {match.group()!r}")
    assert not found, (
        "cite docs/architecture.md by section name instead of a file outside the repository:\n"
        + "\n".join(found)
    )


def test_architecture_has_the_cited_sections() -> None:
    expected = {
        "Data flow",
        "Layers",
        "Kafka contract",
        "Records",
        "Algorithms",
        "Reliability",
        "Security",
        "Storage tiers",
        "Kepler compatibility",
        "Targets",
    }
    assert expected <= sections()


def test_every_citation_names_an_existing_section() -> None:
    known = sections()
    unknown = []
    cited = 0
    for path in tracked_files():
        text = text_of(path)
        if text is None or path in (ARCHITECTURE, Path(__file__).resolve()):  # examples here
            continue
        for match in CITATION.finditer(text):
            names = NAMES.match(text, match.end())
            if names is None:
                continue
            for name in cited_names(names.group(1)):
                cited += 1
                if name not in known:
                    line = text.count("\n", 0, match.start()) + 1
                    unknown.append(f"{path.relative_to(ROOT)}:{line}: {name!r}")
    assert cited > 0, "no citation of a section found: the pattern no longer matches the code"
    assert not unknown, f"citations of sections docs/architecture.md does not have: {unknown}"


def test_the_checks_catch_what_they_are_for() -> None:
    """The patterns themselves: an outside reference and a section citation are recognised."""
    assert OUTSIDE.search("see " + "DESIGN" + ".md for why")
    assert OUTSIDE.search("(`.." + "/shared/notes`)")
    assert OUTSIDE.search("rule of " + "\u00a7" + "10")
    assert not OUTSIDE.search("docs/architecture.md, 'Reliability'")
    text = "docs/architecture.md,\n# 'Algorithms' and 'Reliability')"
    names = NAMES.match(text, CITATION.search(text).end())  # type: ignore[union-attr]
    assert names is not None
    assert cited_names(names.group(1)) == ["Algorithms", "Reliability"]
    text = "(docs/architecture.md, 'Kafka\n        contract')"
    names = NAMES.match(text, CITATION.search(text).end())  # type: ignore[union-attr]
    assert names is not None
    assert cited_names(names.group(1)) == ["Kafka contract"]
