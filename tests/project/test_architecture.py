"""The layers of shared/ and their arrows (README, "How it is built"), read from the imports.

contract <- core <- adapters <- durable / http; the sample subscriber is imported by nothing but
function_app.py. Modules stay small enough to read: none in shared/ or bench/ over 400 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT / "shared"
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, relative imports resolved to absolute names."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _layer(layer: str) -> list[Path]:
    return sorted((SHARED / layer).rglob("*.py"))


def _offending(paths: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in paths
        for name in sorted(_imports(path))
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    ]


def test_the_contract_imports_nothing_of_the_app_or_azure() -> None:
    forbidden = ("shared.core", "shared.adapters", "shared.durable", "shared.http", "azure", "os")
    assert _offending([SHARED / "contract.py"], forbidden) == []


def test_the_core_is_pure() -> None:
    forbidden = (
        "shared.adapters",
        "shared.settings",
        "shared.durable",
        "shared.http",
        "shared.subscriber",
        "azure",
    )
    assert _offending(_layer("core"), forbidden) == []
    readers = [
        str(path.relative_to(ROOT))
        for path in _layer("core")
        if "os.environ" in path.read_text(encoding="utf-8") or "os" in _imports(path)
    ]
    assert readers == []


def test_adapters_do_not_reach_up_into_durable_or_http() -> None:
    forbidden = ("shared.durable", "shared.http", "shared.subscriber")
    assert _offending(_layer("adapters"), forbidden) == []


def test_http_and_durable_meet_only_in_the_contract() -> None:
    assert _offending(_layer("http"), ("shared.durable", "azure.durable_functions")) == []
    assert _offending(_layer("durable"), ("shared.http",)) == []


def test_nothing_imports_the_sample_subscriber_but_function_app() -> None:
    sources = [
        *SHARED.rglob("*.py"),
        *(ROOT / "bench").rglob("*.py"),
        *(ROOT / "devhost").rglob("*.py"),
    ]
    sources = [p for p in sources if SHARED / "subscriber" not in p.parents]
    assert _offending(sources, ("shared.subscriber",)) == []
    assert "shared.subscriber" in _imports(ROOT / "function_app.py")


@pytest.mark.parametrize("folder", ["shared", "bench"])
def test_no_module_is_over_400_lines(folder: str) -> None:
    long = {
        str(path.relative_to(ROOT)): lines
        for path in sorted((ROOT / folder).rglob("*.py"))
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


def test_the_import_reader_resolves_relative_imports() -> None:
    found = _imports(SHARED / "durable" / "orchestrator.py")
    assert "shared.core.decisions" in found
    assert "shared.contract" in found
