"""What must hold of a registered model, checked and mended.

- every version carries exactly one valid stage tag, and at most one is in Production;
- each stage's alias points at the newest version in that stage (``champion`` at the
  production version, ``challenger`` at the newest registration);
- the audit history replays to the stage tags;
- semantic versions grow with version numbers.

``check_registry`` (``mlsys registry check``) reports every violation; ``repair``
(``--repair``) mends what a change cut short, under the registry lock.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import Literal

from mlflow import MlflowClient
from pydantic import BaseModel, ConfigDict

from mlsys_core.registry.lifecycle import (
    MANAGED_ALIASES,
    RegistryState,
    Stage,
    append_audit,
    audit_event,
    expected_aliases,
    parse_semver,
    read_state,
    replay,
    set_stage,
    sync_aliases,
)


class Violation(BaseModel):
    model_config = ConfigDict(frozen=True)

    invariant: Literal["alias", "stage_tag", "history", "semver"]
    version: str | None = None
    detail: str


class RegistryReport(BaseModel):
    """What ``check_registry`` found for one registered model."""

    model_config = ConfigDict(frozen=True)

    name: str
    versions: int
    stages: dict[str, Stage]
    aliases: dict[str, str]
    events: int
    violations: list[Violation]

    @property
    def ok(self) -> bool:
        return not self.violations


def _semver_key(text: str) -> tuple[int, int, int] | None:
    try:
        return parse_semver(text)
    except ValueError:
        return None


def check_state(state: RegistryState) -> list[Violation]:
    """Every way ``state`` breaks the invariants (see the module doc); empty: none."""
    return [
        *_stage_tag_violations(state),
        *_alias_violations(state),
        *_history_violations(state),
        *_semver_violations(state),
    ]


def _by_number(versions: Iterable[str]) -> list[str]:
    return sorted(versions, key=int)


def _stage_tag_violations(state: RegistryState) -> list[Violation]:
    out = []
    for v in _by_number(state.versions):
        tag = state.versions[v].tag
        if tag is None or tag not in set(Stage):
            why = "no stage tag" if tag is None else f"unknown stage {tag!r}"
            out.append(Violation(invariant="stage_tag", version=v, detail=why))
    producing = _by_number(v for v, s in state.stages().items() if s == Stage.PRODUCTION)
    if len(producing) > 1:
        listed = ", ".join(f"v{v}" for v in producing)
        out.append(
            Violation(invariant="stage_tag", detail=f"{len(producing)} in production: {listed}")
        )
    return out


def _alias_violations(state: RegistryState) -> list[Violation]:
    wanted, out = expected_aliases(state.stages()), []
    for alias in MANAGED_ALIASES:
        held, want = state.aliases.get(alias), wanted.get(alias)
        if held != want:
            out.append(
                Violation(
                    invariant="alias",
                    version=held or want,
                    detail=f"@{alias} is on {'v' + held if held else 'nothing'}, the newest "
                    f"version for it is {'v' + want if want else 'none'}",
                )
            )
    return out


def _history_violations(state: RegistryState) -> list[Violation]:
    replayed, stages, out = replay(state.history), state.stages(), []
    for v in _by_number(stages):
        if v not in replayed:
            why = "not in the audit history"
        elif state.versions[v].tag is not None and replayed[v] != stages[v]:
            why = f"the history leaves it in {replayed[v]}, its tag says {stages[v]}"
        else:
            continue
        out.append(Violation(invariant="history", version=v, detail=why))
    for v in _by_number(set(replayed) - set(stages)):
        why = "in the history, not in the registry"
        out.append(Violation(invariant="history", version=v, detail=why))
    return out


def _semver_violations(state: RegistryState) -> list[Violation]:
    registered = {e.version: e.semver for e in state.history if e.action == "register"}
    out: list[Violation] = []
    previous: tuple[str, str] | None = None  # (version, semver) of the last one seen
    for v in _by_number(state.versions):
        semver = state.versions[v].semver
        if semver is None:
            continue
        if registered.get(v) not in (None, semver):
            why = f"semver {semver}, registered as {registered[v]}"
            out.append(Violation(invariant="semver", version=v, detail=why))
        if _semver_key(semver) is None:
            out.append(Violation(invariant="semver", version=v, detail=f"bad semver {semver!r}"))
            continue
        if previous is not None and _semver_key(semver) <= _semver_key(previous[1]):
            why = f"v{v} is {semver}, not above v{previous[0]}'s {previous[1]}"
            out.append(Violation(invariant="semver", version=v, detail=why))
        previous = (v, semver)
    return out


def check_registry(client: MlflowClient, name: str) -> RegistryReport:
    """Read ``name`` once and check the lifecycle's invariants on it (no lock needed: a
    reader in the middle of a change may see it half done, so run it again before acting
    on a violation, or check under the lock)."""
    state = read_state(client, name)
    return _report(state)


def _report(state: RegistryState) -> RegistryReport:
    return RegistryReport(
        name=state.name,
        versions=len(state.versions),
        stages=state.stages(),
        aliases={a: v for a, v in state.aliases.items() if a in MANAGED_ALIASES},
        events=len(state.history),
        violations=check_state(state),
    )


def repair(
    client: MlflowClient, name: str, actor: str, lock: AbstractContextManager
) -> RegistryReport:
    """Mend what a change cut short, under the lock, and return the report after it.

    The history is the log: a version it knows gets the stage the history leaves it in; a
    version it does not know (registered outside mlsys, or cut short after creation) is
    recorded with its current stage by a ``repair`` event; then every alias is derived from
    the stage tags. Semantic versions are never rewritten: a semver violation stays.
    """
    with lock:
        state = read_state(client, name)
        replayed = replay(state.history)
        stages = state.stages()
        after = list(state.history)
        for v in sorted(state.versions, key=int):
            vs = state.versions[v]
            if v not in replayed:
                event = audit_event(
                    actor,
                    "repair",
                    v,
                    to_stage=vs.stage,
                    to_version=v,
                    reason="recorded by repair: the version was not in the audit history",
                )
                after.append(append_audit(client, name, event, after))
                replayed[v] = vs.stage
            if vs.tag != replayed[v].value:
                set_stage(client, name, v, replayed[v])
                stages[v] = replayed[v]
        sync_aliases(client, name, state.aliases, stages)
        return _report(read_state(client, name))
