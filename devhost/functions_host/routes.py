"""HTTP route templates as the Functions host (ASP.NET Core routing) reads them.

Supported: literal segments (case-insensitive), `{name}`, `{name?}`, `{name:constraint}`,
`{name:constraint?}`, `{*name}` / `{**name}` catch-all, and the common inline constraints
(alpha, int, long, bool, guid, double, float, decimal, datetime, min, max, range, minlength,
maxlength, length). Anything else is refused at indexing rather than matched loosely.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import unquote

from .errors import IndexingError

_PARAM = re.compile(r"^\{(?P<star>\*{0,2})(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<rest>[^{}]*)\}$")
_CONSTRAINT = re.compile(r"^(?P<name>[a-z]+)(?:\((?P<args>[^()]*)\))?$")
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)


def _is_int(value: str, bounds: tuple[int, int]) -> bool:
    if not re.fullmatch(r"[+-]?\d+", value):
        return False
    return bounds[0] <= int(value) <= bounds[1]


def _is_float(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return value.strip().lower() not in ("nan", "inf", "-inf", "+inf", "infinity")


def _is_guid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _is_datetime(value: str) -> bool:
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Constraint:
    name: str
    args: tuple[str, ...]

    def accepts(self, value: str) -> bool:
        name, args = self.name, self.args
        if name == "alpha":
            return bool(re.fullmatch(r"[A-Za-z]+", value))
        if name == "int":
            return _is_int(value, _INT32)
        if name == "long":
            return _is_int(value, _INT64)
        if name == "bool":
            return value.lower() in ("true", "false")
        if name == "guid":
            return _is_guid(value)
        if name in ("double", "float", "decimal"):
            return _is_float(value)
        if name == "datetime":
            return _is_datetime(value)
        if name in ("min", "max", "range"):
            if not _is_int(value, _INT64):
                return False
            number = int(value)
            if name == "min":
                return number >= int(args[0])
            if name == "max":
                return number <= int(args[0])
            return int(args[0]) <= number <= int(args[1])
        if name == "minlength":
            return len(value) >= int(args[0])
        if name == "maxlength":
            return len(value) <= int(args[0])
        if name == "length":
            if len(args) == 1:
                return len(value) == int(args[0])
            return int(args[0]) <= len(value) <= int(args[1])
        raise AssertionError(name)


_CONSTRAINT_ARITY = {
    "alpha": (0,),
    "int": (0,),
    "long": (0,),
    "bool": (0,),
    "guid": (0,),
    "double": (0,),
    "float": (0,),
    "decimal": (0,),
    "datetime": (0,),
    "min": (1,),
    "max": (1,),
    "range": (2,),
    "minlength": (1,),
    "maxlength": (1,),
    "length": (1, 2),
}


@dataclass(frozen=True)
class Segment:
    literal: str | None = None
    param: str | None = None
    constraints: tuple[Constraint, ...] = ()
    optional: bool = False
    catch_all: bool = False

    @property
    def shape(self) -> str:
        """Segment shape ignoring parameter names (two templates with equal shapes conflict)."""
        if self.literal is not None:
            return self.literal.lower()
        constraints = ":".join(f"{c.name}({','.join(c.args)})" for c in self.constraints)
        return f"{{{'*' if self.catch_all else ''}{constraints}{'?' if self.optional else ''}}}"

    @property
    def precedence(self) -> int:
        """ASP.NET ordering: literals, then constrained, plain, optional, catch-all parameters."""
        if self.literal is not None:
            return 0
        if self.catch_all:
            return 4
        if self.optional:
            return 3
        return 1 if self.constraints else 2


def _parse_segment(text: str, template: str) -> Segment:
    if "{" not in text and "}" not in text:
        if not text:
            raise IndexingError(f"route {template!r} has an empty segment")
        return Segment(literal=text)
    match = _PARAM.match(text)
    if match is None:
        raise IndexingError(
            f"route {template!r}: segment {text!r} mixes literals and parameters or is malformed "
            "(not emulated)"
        )
    rest = match.group("rest")
    optional = rest.endswith("?")
    if optional:
        rest = rest[:-1]
    if "=" in rest:
        raise IndexingError(f"route {template!r}: default values in templates are not emulated")
    constraints: list[Constraint] = []
    for part in [p for p in rest.split(":") if p] if rest else []:
        cmatch = _CONSTRAINT.match(part.lower())
        if cmatch is None or cmatch.group("name") not in _CONSTRAINT_ARITY:
            raise IndexingError(f"route {template!r}: constraint {part!r} is not emulated")
        args = tuple(a.strip() for a in (cmatch.group("args") or "").split(",") if a.strip())
        if len(args) not in _CONSTRAINT_ARITY[cmatch.group("name")]:
            raise IndexingError(f"route {template!r}: constraint {part!r} has wrong arguments")
        constraints.append(Constraint(cmatch.group("name"), args))
    if rest and not rest.startswith(":"):
        raise IndexingError(f"route {template!r}: malformed parameter {text!r}")
    return Segment(
        param=match.group("name"),
        constraints=tuple(constraints),
        optional=optional,
        catch_all=bool(match.group("star")),
    )


class RouteTemplate:
    """A parsed route template, matched against a request path (without query)."""

    def __init__(self, template: str) -> None:
        self.template = template
        stripped = template.strip("/")
        self.segments: tuple[Segment, ...] = (
            tuple(_parse_segment(part, template) for part in stripped.split("/"))
            if stripped
            else ()
        )
        names = [s.param.lower() for s in self.segments if s.param is not None]
        if len(names) != len(set(names)):
            raise IndexingError(f"route {template!r} uses a parameter name twice")
        for position, segment in enumerate(self.segments):
            if segment.catch_all and position != len(self.segments) - 1:
                raise IndexingError(f"route {template!r}: a catch-all must be the last segment")
            if segment.optional and any(
                not (later.optional or later.catch_all) for later in self.segments[position + 1 :]
            ):
                raise IndexingError(
                    f"route {template!r}: an optional parameter must be followed only by optional ones"
                )

    @property
    def shape(self) -> str:
        return "/".join(segment.shape for segment in self.segments)

    @property
    def precedence(self) -> tuple[int, ...]:
        return tuple(segment.precedence for segment in self.segments)

    def match(self, path: str) -> dict[str, str] | None:
        parts = [p for p in path.strip("/").split("/")] if path.strip("/") else []
        values: dict[str, str] = {}
        for position, segment in enumerate(self.segments):
            if segment.catch_all:
                rest = "/".join(unquote(p) for p in parts[position:])
                if rest:
                    values[str(segment.param)] = rest
                return values
            if position >= len(parts):
                if segment.optional:
                    continue
                return None
            value = unquote(parts[position])
            if segment.literal is not None:
                if value.lower() != segment.literal.lower():
                    return None
                continue
            if not value or not all(c.accepts(value) for c in segment.constraints):
                return None
            values[str(segment.param)] = value
        if len(parts) > len(self.segments):
            return None
        return values
