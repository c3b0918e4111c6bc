"""docs/benchmarks.md from the results of `bench.main.run` (`render`), one module per section."""

from .document import render
from .format import PNG_FRONTIER, PNG_MAIN, rows, secs

__all__ = ["PNG_FRONTIER", "PNG_MAIN", "render", "rows", "secs"]
