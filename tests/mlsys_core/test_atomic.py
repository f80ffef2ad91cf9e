"""mlsys_core/atomic.py: whole files or none."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlsys_core.atomic import write_atomically, write_text_atomically


def test_writes_the_whole_file_and_replaces_an_old_one(tmp_path: Path):
    path = tmp_path / "deep" / "result.json"
    write_text_atomically(path, "first")
    write_text_atomically(path, "second", sync_folder=True)
    assert path.read_text() == "second"
    assert sorted(p.name for p in path.parent.iterdir()) == ["result.json"]


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path: Path):
    path = tmp_path / "state.bin"
    write_text_atomically(path, "good")

    def half_then_fail(handle):
        handle.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(path, half_then_fail)
    assert path.read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["state.bin"]
