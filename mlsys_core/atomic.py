"""Writing a file so that a reader sees all of it or none of it: write a temporary file in
the same folder, fsync it, rename it over the target. A failure leaves no temporary file."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from mlsys_core.crashpoints import crash_point


def write_atomically(
    path: Path, write: Callable[[BinaryIO], object], *, sync_folder: bool = False
) -> None:
    """``write(handle)`` fills the file; ``sync_folder`` also makes the rename durable."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            crash_point("atomic.write")  # written, not yet durable
            handle.flush()
            os.fsync(handle.fileno())
        crash_point("atomic.rename")  # whole, not in place
        os.replace(tmp, path)
        crash_point("atomic.placed")  # in place; the caller has not heard yet
    finally:
        tmp.unlink(missing_ok=True)
    if sync_folder:
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def write_text_atomically(path: Path, text: str, *, sync_folder: bool = False) -> None:
    write_atomically(path, lambda handle: handle.write(text.encode()), sync_folder=sync_folder)
