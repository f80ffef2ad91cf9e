"""What a person reads when a typed config or spec is refused."""

from __future__ import annotations

import difflib
import re
from collections import defaultdict
from collections.abc import Collection
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
    top = next((m for m in _models() if m.__name__ == err.title), None)
    problems = []
    for loc, message in _closest_members([(_where(e["loc"]), e) for e in errors]):
        what = message["msg"].removeprefix("Value error, ")
        if message["type"] == "extra_forbidden" and len(loc) == 1 and top is not None:
            what = unknown_field(loc[0], top.model_fields)  # a typo at the top: "hiden"
        problems.append(f"{'.'.join(loc)}: {what}" if loc else what)
    return "; ".join(problems)


def unknown_field(name: str, known: Collection[str]) -> str:
    """What to say of a field a record or config does not have: the one it likely meant (a
    different case, ``_`` for a space, a word cut short, a typo), so a hand-written request
    or config is mended at once."""

    def plain(text: str) -> str:
        return re.sub(r"[\s_.-]+", "", text).casefold()

    said = plain(name)
    close = [k for k in known if plain(k) == said]
    if not close and len(said) >= 3:  # noqa: PLR2004 -- "batch" for "batch_size"
        close = [k for k in known if plain(k).startswith(said)]
        close = close if len(close) == 1 else []
    close = close or difflib.get_close_matches(name, list(known), n=1, cutoff=0.75)
    return f"no field {name!r}" + (f": did you mean {close[0]!r}?" if close else "")


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
    return {model.__name__ for model in _models()}


def _models() -> list[type[BaseModel]]:
    found, todo = [], [BaseModel]
    while todo:
        for sub in todo.pop().__subclasses__():
            found.append(sub)
            todo.append(sub)
    return found
