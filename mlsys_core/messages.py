"""What a person reads when a typed config or spec is refused."""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from pydantic import BaseModel, ValidationError

# pydantic names a union's model with an after-validator "function-after[_check(), Name]"
_VALIDATED = re.compile(r"^function-\w+\[.*, (\w+)\]$")
_SHAPE = {"missing", "extra_forbidden"}  # what says a union member was not the one meant


def invalid(err: ValidationError) -> str:
    """A pydantic error as one line: each problem as ``where: what``, without pydantic's
    dump of the input, its error codes and its documentation links (several lines per
    problem, the input a whole spec). Of a union (a split is a ``TimeSplit``, a
    ``RecentSplit`` or a ``HashSplit``), only the member the input was shaped as is
    reported: the others' "Field required" would bury the one real problem."""
    errors = err.errors(include_url=False, include_input=False, include_context=False)
    problems = []
    for loc, message in _closest_members([(_where(e["loc"]), e) for e in errors]):
        what = message["msg"].removeprefix("Value error, ")
        problems.append(f"{'.'.join(loc)}: {what}" if loc else what)
    return "; ".join(problems)


def _where(loc: tuple[Any, ...]) -> tuple[str, ...]:
    return tuple(m.group(1) if (m := _VALIDATED.match(str(p))) else str(p) for p in loc)


def _closest_members(
    located: list[tuple[tuple[str, ...], dict]],
) -> list[tuple[tuple[str, ...], dict]]:
    models = _model_names()
    members: dict[tuple[str, ...], dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for i, (loc, _) in enumerate(located):
        if (at := next((n for n, p in enumerate(loc) if p in models), None)) is not None:
            members[loc[:at]][loc[at]].append(i)
    dropped: set[int] = set()
    for by_member in members.values():
        if len(by_member) < 2:  # noqa: PLR2004 -- one member is no choice
            continue

        def misfit(name: str, by_member: dict = by_member) -> tuple[int, int]:
            shape = sum(located[i][1]["type"] in _SHAPE for i in by_member[name])
            return shape, len(by_member[name])

        best = min(by_member, key=misfit)
        dropped |= {i for name, ids in by_member.items() if name != best for i in ids}
    return [item for i, item in enumerate(located) if i not in dropped]


def _model_names() -> set[str]:
    names, todo = set(), [BaseModel]
    while todo:
        for sub in todo.pop().__subclasses__():
            names.add(sub.__name__)
            todo.append(sub)
    return names
