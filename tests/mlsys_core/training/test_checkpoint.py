"""CheckpointStore: atomic and checksummed files, the newest valid one wins, the last N kept,
and nothing is ever unpickled."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from mlsys_core.training.checkpoint import CheckpointError, CheckpointStore


def state(value: float) -> dict:
    return {"w": torch.full((64,), value), "step": int(value), "rng": torch.get_rng_state()}


def test_save_writes_the_file_and_its_sha256(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "ckpt")  # the folder does not exist yet
    path = store.save(state(3), step=3)
    assert path == tmp_path / "ckpt" / "step-000000003.pt"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert path.with_suffix(".sha256").read_text() == f"{digest}  {path.name}\n"
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "step-000000003.pt",
        "step-000000003.sha256",
    ]  # no temporary files left behind
    loaded = store.load_latest()
    assert loaded.step == 3
    assert torch.equal(loaded.state["w"], torch.full((64,), 3.0))
    assert torch.equal(loaded.state["rng"], state(3)["rng"])


def test_keeps_the_last_n(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep=2)
    for step in (1, 2, 5, 9):
        store.save(state(step), step)
    assert store.steps() == [9, 5]
    assert store.load_latest().step == 9


@pytest.mark.parametrize("damage", ["truncate", "flip_a_byte", "no_checksum"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous(
    tmp_path: Path, damage: str
) -> None:
    store = CheckpointStore(tmp_path, keep=3)
    store.save(state(1), 1)
    newest = store.save(state(2), 2)
    data = newest.read_bytes()
    if damage == "truncate":  # a crash halfway through a copy, a full disk
        newest.write_bytes(data[: len(data) // 2])
    elif damage == "flip_a_byte":
        newest.write_bytes(data[:-10] + bytes([data[-10] ^ 0xFF]) + data[-9:])
    else:  # killed between the rename and the checksum
        newest.with_suffix(".sha256").unlink()
    loaded = store.load_latest()
    assert loaded.step == 1
    assert torch.equal(loaded.state["w"], torch.full((64,), 1.0))


def test_no_checkpoint_is_none_but_only_bad_ones_is_an_error(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "absent")
    assert store.load_latest() is None
    store.save(state(1), 1)
    store.path_for(1).write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="none passes its checksum"):
        store.load_latest()


def test_a_first_save_cut_short_before_its_checksum_is_no_checkpoint(tmp_path: Path) -> None:
    """Nothing was finished: training starts over instead of failing to resume."""
    store = CheckpointStore(tmp_path)
    store.save(state(1), 1)
    store.path_for(1).with_suffix(".sha256").unlink()
    assert store.load_latest() is None
    store.save(state(2), 1)  # the retry writes the same step again, whole
    assert store.load_latest().step == 1


def test_a_valid_checksum_does_not_make_a_pickle_loadable(tmp_path: Path) -> None:
    """Even a checkpoint with a matching checksum is loaded with weights_only=True."""
    store = CheckpointStore(tmp_path)
    store.save({"obj": torch.ones(1)}, 1)
    path = store.path_for(1)
    torch.save({"obj": Path("/")}, path)  # a pickled non-tensor object...
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    path.with_suffix(".sha256").write_text(f"{digest}  {path.name}\n")  # ...and its checksum
    with pytest.raises(Exception, match="(?i)weights_only"):
        store.load_latest()


def test_clear_removes_the_checkpoints(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "job")
    store.save(state(1), 1)
    store.clear()
    assert not (tmp_path / "job").exists()
    assert store.load_latest() is None
