"""Training checkpoints: atomic, checksummed, the last N kept, never unpickled.

A checkpoint is one ``torch.save`` file of tensors and plain values (loaded back with
``weights_only=True``) plus a sidecar ``<name>.sha256``. The checksum is written after the
checkpoint is in place, so a checkpoint without a matching checksum is either truncated,
corrupt or half-written, and loading falls back to the previous one.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from mlsys_core.atomic import write_atomically
from mlsys_core.crashpoints import crash_point
from mlsys_core.data.sources import file_sha256

log = logging.getLogger(__name__)

_NAME = re.compile(r"^step-(\d{9})\.pt$")
_TEMPORARY = re.compile(r"^\.step-\d{9}\.(pt|sha256)\.tmp-(\d+)-[0-9a-f]+$")


class CheckpointError(RuntimeError):
    """A checkpoint folder exists but holds nothing that can be resumed."""


@dataclass(frozen=True)
class LoadedCheckpoint:
    path: Path
    step: int
    state: dict


class CheckpointStore:
    """The checkpoints of one training job, named by global optimizer step."""

    def __init__(self, folder: Path, keep: int = 2) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.folder = Path(folder)
        self.keep = keep

    def path_for(self, step: int) -> Path:
        return self.folder / f"step-{step:09d}.pt"

    def steps(self) -> list[int]:
        """Steps with a checkpoint file, newest first (valid or not)."""
        if not self.folder.is_dir():
            return []
        found = (_NAME.match(p.name) for p in self.folder.iterdir())
        return sorted((int(m.group(1)) for m in found if m), reverse=True)

    def save(self, state: dict, step: int) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.remove_temporary()
        path = self.path_for(step)
        write_atomically(path, lambda handle: torch.save(state, handle), sync_folder=True)
        crash_point("checkpoint.sidecar")  # in place, not yet valid: loading skips it
        checksum = f"{file_sha256(path)}  {path.name}\n".encode()
        write_atomically(
            path.with_suffix(".sha256"), lambda handle: handle.write(checksum), sync_folder=True
        )
        self._prune()
        return path

    def verify(self, step: int) -> bool:
        path = self.path_for(step)
        sidecar = path.with_suffix(".sha256")
        if not (path.is_file() and sidecar.is_file()):
            return False
        expected = sidecar.read_text().split()[0] if sidecar.read_text().strip() else ""
        return expected == file_sha256(path)

    def load_latest(self, device: str | torch.device = "cpu") -> LoadedCheckpoint | None:
        """The newest checkpoint whose checksum matches; older ones stand in for bad ones.

        Returns None for an empty or missing folder, or one holding only a save cut short
        before its checksum (nothing was finished); raises if finished checkpoints exist but
        none is valid, since silently starting over would discard the work they hold.
        """
        steps = self.steps()
        for step in steps:
            path = self.path_for(step)
            if not self.verify(step):
                log.warning("checkpoint %s is truncated or corrupt; trying an older one", path)
                continue
            state = torch.load(path, map_location=device, weights_only=True)
            return LoadedCheckpoint(path, step, state)
        if any(self.path_for(s).with_suffix(".sha256").is_file() for s in steps):
            raise CheckpointError(
                f"{len(steps)} checkpoint(s) in {self.folder} and none passes its checksum"
            )
        return None

    def clear(self) -> None:
        """Remove this job's checkpoints (after it finished and its model was logged)."""
        if not self.folder.is_dir():
            return
        for path in self.folder.iterdir():
            if _NAME.match(path.name) or path.suffix == ".sha256" or path.name.startswith("."):
                path.unlink(missing_ok=True)
        try:
            self.folder.rmdir()
        except OSError:
            pass  # something else lives there; leave it

    def remove_temporary(self) -> list[Path]:
        """Remove the temporary files of another process's interrupted save. One process
        writes a job's checkpoints (rank 0), and a new one starts after the old one is gone,
        so another process's temporary file is a dead writer's."""
        if not self.folder.is_dir():
            return []
        removed = []
        for path in self.folder.iterdir():
            found = _TEMPORARY.match(path.name)
            if found and int(found.group(2)) != os.getpid():
                path.unlink(missing_ok=True)
                removed.append(path)
        return removed

    def _prune(self) -> None:
        steps = self.steps()
        valid = [s for s in steps if self.verify(s)]
        if len(valid) < self.keep:
            return
        oldest_kept = valid[self.keep - 1]
        for step in (s for s in steps if s < oldest_kept):
            path = self.path_for(step)
            path.with_suffix(".sha256").unlink(missing_ok=True)
            crash_point("checkpoint.prune")  # invalid now, still there: the next prune goes on
            path.unlink(missing_ok=True)
