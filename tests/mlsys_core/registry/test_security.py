"""A pickle planted as the model's weights is refused on load, and nothing in it runs."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch
import yaml

from mlsys_core.tracking import configure_mlflow
from mlsys_core.training.pyfunc import UnsafeArtifactError, load_weights


class Planted:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def model_copy(trained_pair, tmp_path: Path) -> Path:
    """A private copy of a real logged model folder, free to tamper with."""
    configure_mlflow(trained_pair.settings.tracking)
    src = mlflow.artifacts.download_artifacts(
        artifact_uri=trained_pair.models[0].model_uri, dst_path=str(tmp_path / "download")
    )
    return Path(shutil.copytree(src, tmp_path / "model"))


def plant(model: Path, name: str, payload: bytes) -> None:
    """Replace the weights artifact with ``payload`` under ``name``, as an attacker with
    write access to the artifact store would."""
    mlmodel = yaml.safe_load((model / "MLmodel").read_text())
    weights = mlmodel["flavors"]["python_function"]["artifacts"]["weights"]
    (model / weights["path"]).unlink()
    weights["path"] = f"artifacts/{name}"
    (model / weights["path"]).write_bytes(payload)
    (model / "MLmodel").write_text(yaml.safe_dump(mlmodel))


def test_the_planted_pickle_is_really_malicious(tmp_path: Path) -> None:
    """The control: plain ``pickle.load`` of the payload does create the marker."""
    marker = tmp_path / "pwned"
    payload = tmp_path / "payload.pkl"
    payload.write_bytes(pickle.dumps(Planted(marker)))
    code = f"import pickle; pickle.load(open({str(payload)!r}, 'rb'))"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert marker.exists()


@pytest.mark.slow  # its shared fixture trains and logs real models
def test_registered_weights_are_safetensors(model_copy: Path) -> None:
    mlmodel = yaml.safe_load((model_copy / "MLmodel").read_text())
    path = model_copy / mlmodel["flavors"]["python_function"]["artifacts"]["weights"]["path"]
    assert path.suffix == ".safetensors"
    assert all(isinstance(t, torch.Tensor) for t in load_weights(path).values())


@pytest.mark.slow  # its shared fixture trains and logs real models
@pytest.mark.parametrize("name", ["weights.safetensors", "weights.pt", "weights.pt-torch"])
def test_loading_a_model_with_planted_weights_refuses_it(
    model_copy: Path, tmp_path: Path, name: str
) -> None:
    marker = tmp_path / "pwned"
    if name == "weights.pt-torch":  # a torch checkpoint that carries the object
        name = "weights.pt"
        torch.save({"layer.weight": Planted(marker)}, tmp_path / "evil.pt")
        payload = (tmp_path / "evil.pt").read_bytes()
    else:  # a bare pickle posing as weights
        payload = pickle.dumps(Planted(marker))
    plant(model_copy, name, payload)

    with pytest.raises(UnsafeArtifactError, match=f"refusing to load model weights {name}"):
        mlflow.pyfunc.load_model(str(model_copy))
    assert not marker.exists()
