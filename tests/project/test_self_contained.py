"""The repository needs nothing beside it: the specs the tests read ship in devhost/specs/
(with their sources), and no tracked file reads a path outside the repository."""

from __future__ import annotations

import ast
import io
import json
import re
import shutil
import subprocess
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SPECS = ROOT / "devhost" / "specs"

# Files whose paths are resolved against the working directory (the repository root: make,
# pytest and the offline services all run there) rather than against the file itself.
_CWD_RELATIVE = (".py", ".sh", ".toml", ".cfg", ".ini", ".yaml", ".yml")
_CWD_RELATIVE_NAMES = {"Makefile"}
# Contents of the folder that sits beside the checkout on some machines and not in a clone.
_OUTSIDE_FOLDERS = re.compile(r"(?<![\w/.-])(?:\.\./)*shared/(?:specs|reference|hooks)\b")
_DOTDOT = re.compile(r"(?<![\w.])((?:\.\./)+[\w.\-/]*)")
_FILE_PARENTS = re.compile(r"Path\(__file__\)(?:\.resolve\(\)|\.absolute\(\))?((?:\.parent\b)+)")
_FILE_PARENTS_INDEX = re.compile(
    r"Path\(__file__\)(?:\.resolve\(\)|\.absolute\(\))?\.parents\[(\d+)\]"
)
_ROOT_PARENT = re.compile(r"\b_?(?:REPO_)?ROOT\.parents?\b")
_ABSOLUTE = re.compile(r"[\"'](/work/|/Users/)")


def _escapes(base: Path, relative: str) -> bool:
    target = (ROOT / base / relative).resolve()
    return not target.is_relative_to(ROOT)


def _python_code_lines(text: str) -> list[str]:
    """The lines of a Python file with comments and docstrings blanked: prose, not reads."""
    lines = text.splitlines()
    try:
        tree = ast.parse(text)
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (SyntaxError, tokenize.TokenError):
        return lines
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        assert isinstance(body, list)
        first = body[0] if body else None
        if (
            isinstance(first, ast.Expr)
            and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)
        ):
            for index in range(first.lineno - 1, (first.end_lineno or first.lineno)):
                lines[index] = ""
    for token in tokens:
        if token.type == tokenize.COMMENT:
            row, column = token.start
            lines[row - 1] = lines[row - 1][:column]
    return lines


def outside_references(rel_path: str, text: str) -> list[str]:
    """Places where the file at `rel_path` (relative to the root) reads outside the repository.

    Python comments and docstrings are prose and not checked. Markdown is prose too, but a
    `../` path there must exist inside the repository (relative to the document, as a link is
    resolved), so `../shared/...` pointers are refused there as well.
    """
    found: list[str] = []
    path = Path(rel_path)
    depth = len(path.parts)  # Path(__file__).parents[depth - 1] is the root
    markdown = path.suffix == ".md"
    cwd_relative = path.suffix in _CWD_RELATIVE or path.name in _CWD_RELATIVE_NAMES
    lines = _python_code_lines(text) if path.suffix == ".py" else text.splitlines()
    for number, line in enumerate(lines, start=1):
        where = f"{rel_path}:{number}: {line.strip()}"
        if _OUTSIDE_FOLDERS.search(line):
            found.append(where)
            continue
        for match in _DOTDOT.finditer(line):
            token = match.group(1)
            if markdown:
                target = (ROOT / path.parent / token).resolve()
                if not target.is_relative_to(ROOT) or not target.exists():
                    found.append(where)
            elif _escapes(path.parent, token) or (cwd_relative and _escapes(Path(), token)):
                found.append(where)
        if markdown:
            continue
        for match in _FILE_PARENTS.finditer(line):
            if match.group(1).count(".parent") > depth:
                found.append(where)
        for match in _FILE_PARENTS_INDEX.finditer(line):
            if int(match.group(1)) >= depth:
                found.append(where)
        if _ROOT_PARENT.search(line) or _ABSOLUTE.search(line):
            found.append(where)
    return found


def _repository_files() -> list[str]:
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(
        [git, "ls-files", "--cached", "-z"],  # what a clone gets
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [name for name in listed.split("\0") if name and (ROOT / name).is_file()]


def test_no_file_reads_outside_the_repository() -> None:
    files = _repository_files()
    assert "Makefile" in files
    assert "devhost/eventgrid_topic.py" in files
    problems: list[str] = []
    this_file = Path(__file__).resolve().relative_to(ROOT).as_posix()
    for name in files:
        if name == this_file:
            continue  # its examples of what the check refuses
        if name.startswith("devhost/specs/") and name.endswith(".json"):
            continue  # upstream data, read as data
        try:
            text = (ROOT / name).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary (plots)
        problems.extend(outside_references(name, text))
    assert not problems, "paths outside the repository:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("rel_path", "line"),
    [
        ("devhost/eventgrid_topic.py", 'Path(__file__).resolve().parents[2] / "shared"'),
        ("tests/test_x.py", 'SPECS = ROOT.parent / "shared" / "specs"'),
        ("tests/test_x.py", '"../shared/specs/azure-ai-agents.v1.swagger.json",'),
        ("tests/test_x.py", "root = Path(__file__).resolve().parent.parent.parent"),
        ("bench/x.py", "open('/work/shared/specs/x.json')"),
        ("Makefile", "\tcp ../shared/specs/x.json tests/"),
        ("tests/README.md", "Specs are read from `../shared/specs/` beside the repository."),
        ("infra/README.md", "see [the notes](../../notes.md)"),
    ],
)
def test_the_check_catches_outside_paths(rel_path: str, line: str) -> None:
    assert outside_references(rel_path, line)


@pytest.mark.parametrize(
    ("rel_path", "line"),
    [
        (
            "devhost/functions_host/host.py",
            "_REPO_ROOT = Path(__file__).resolve().parents[2]",
        ),
        ("tests/test_x.py", "ROOT = Path(__file__).resolve().parent.parent"),
        ("shared/subscriber/event_check.py", "Path(__file__).resolve().parents[2] / 'docs'"),
        ("infra/README.md", "`azd up` (with [azure.yaml](../azure.yaml)) provisions"),
        ("devhost/eventgrid_topic.py", 'return Path(__file__).resolve().parent / "specs"'),
        ("tests/x.py", '"""Speaks the protocol of ../shared/reference/wire.md."""'),
        ("tests/x.py", "x = 1  # as in ../shared/specs/x.json"),
    ],
)
def test_the_check_allows_paths_inside(rel_path: str, line: str) -> None:
    assert outside_references(rel_path, line) == []


def test_every_spec_file_is_listed_with_its_source() -> None:
    sources = (SPECS / "SOURCES.md").read_text(encoding="utf-8")
    rows = {
        match.group(1): int(match.group(2))
        for match in re.finditer(r"^\| `([^`]+)` \|.*\| (\d+) \| [^|]+ \|$", sources, re.M)
    }
    shipped = {
        p.name: p.stat().st_size
        for p in SPECS.iterdir()
        if p.name != "SOURCES.md" and not p.name.startswith("LICENSE-")
    }
    assert shipped == rows
    for name in shipped:
        json.loads((SPECS / name).read_text(encoding="utf-8"))
    # Each licence named is shipped beside the files, and named in SOURCES.md.
    for licence in ("LICENSE-MIT-azure-rest-api-specs.txt", "LICENSE-Apache-2.0.txt"):
        assert (SPECS / licence).is_file()
        assert licence in sources
    assert "Apache License" in (SPECS / "LICENSE-Apache-2.0.txt").read_text(encoding="utf-8")


def test_the_topic_reads_the_specs_in_the_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    from devhost import eventgrid_topic

    monkeypatch.delenv("TESTBED_SPECS_DIR", raising=False)
    assert eventgrid_topic._specs_dir() == SPECS
