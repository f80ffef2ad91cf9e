"""Dataset references: a published name, a module attribute or a file, resolved in one place."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from mlsys_core.datasets import (
    SpecReferenceError,
    published_datasets,
    resolve_model_name,
    resolve_spec,
    spec_or_default,
)
from mlsys_core.datasets.digits import digits_spec
from mlsys_core.spec import DatasetSpec

# A user's spec file, outside the package: a function returning a spec, and a spec itself.
USER_FILE = """
from mlsys_core.datasets.digits import digits_spec

def churn():
    return digits_spec().model_copy(update={"name": "churn"})

CHURN = churn()
NOT_A_SPEC = 42

def broken():
    return "not a spec"
"""


@pytest.fixture
def user_file(tmp_path: Path) -> Path:
    path = tmp_path / "my datasets" / "churn.py"
    path.parent.mkdir()
    path.write_text(textwrap.dedent(USER_FILE))
    return path


def test_the_shipped_datasets_are_published_like_a_users() -> None:
    published = published_datasets()
    assert {"nycflights13", "nycflights13_text", "digits"} <= set(published)
    assert published["digits"].group == "mlsys.datasets"
    assert resolve_spec("digits") == digits_spec()
    assert resolve_spec("nycflights13").registered_model == "flight-delay"
    assert resolve_spec("nycflights13_text").registered_model == "nycflights13-text"


def test_a_module_attribute_names_a_function_or_a_spec() -> None:
    assert resolve_spec("mlsys_core.datasets.digits:digits_spec") == digits_spec()
    spec = digits_spec()
    assert resolve_spec(spec) is spec


def test_a_file_outside_the_package_by_path(user_file: Path) -> None:
    by_function = resolve_spec(f"{user_file}:churn")
    by_value = resolve_spec(f"{user_file}:CHURN")
    assert isinstance(by_function, DatasetSpec) and by_function.name == "churn"
    assert by_value == by_function
    assert by_function.registered_model == "churn"


def test_a_spec_file_edited_in_the_same_process_is_read_anew(user_file: Path) -> None:
    """A notebook that edits its spec file, or ``spec init --force`` over one, resolves the
    edit, not the module the first read left behind; an unchanged file is not run again."""
    first = sys.modules.copy()
    assert resolve_spec(f"{user_file}:churn").name == "churn"
    loaded = set(sys.modules) - set(first)
    assert resolve_spec(f"{user_file}:churn").name == "churn"
    assert set(sys.modules) - set(first) == loaded  # the same module, reused
    user_file.write_text(
        textwrap.dedent(USER_FILE).replace('"name": "churn"', '"name": "churn_v2"')
    )
    assert resolve_spec(f"{user_file}:churn").name == "churn_v2"


def test_a_relative_file_path_resolves_from_the_working_folder(
    user_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(user_file.parent.parent)
    assert resolve_spec(f"{user_file.parent.name}/churn.py:churn").name == "churn"


def test_an_importable_user_module(user_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(user_file.parent))
    monkeypatch.delitem(sys.modules, "churn", raising=False)
    assert resolve_spec("churn:churn").name == "churn"


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("no_such_dataset", "no dataset 'no_such_dataset': not published under entry-point"),
        ("no_such_module:spec", "no module 'no_such_module'"),
        ("mlsys_core.datasets.digits:nothing", "has no 'nothing'"),
        ("/no/such/file.py:spec", "no file /no/such/file.py"),
        ("mlsys_core.datasets.digits:", "expected MODULE:ATTR or FILE.py:ATTR"),
        ("", "non-empty string"),
    ],
)
def test_a_bad_reference_is_one_clear_line(ref: str, message: str) -> None:
    with pytest.raises(SpecReferenceError, match=message) as err:
        resolve_spec(ref)
    assert "\n" not in str(err.value)


def test_the_unknown_name_error_lists_what_is_published() -> None:
    published = "digits, nycflights13, nycflights13_sample, nycflights13_text"
    with pytest.raises(SpecReferenceError, match=published):
        resolve_spec("flights")


@pytest.mark.parametrize(("attr", "what"), [("NOT_A_SPEC", "is a int"), ("broken", "returned str")])
def test_an_attribute_that_is_no_spec_is_refused(user_file: Path, attr: str, what: str) -> None:
    with pytest.raises(SpecReferenceError, match=what):
        resolve_spec(f"{user_file}:{attr}")


def test_a_file_that_fails_to_run_says_so(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(SpecReferenceError, match="bad.py failed: boom"):
        resolve_spec(f"{bad}:spec")


def test_defaults_come_from_the_settings_or_fail_clearly() -> None:
    assert spec_or_default(None, "digits") == digits_spec()
    assert spec_or_default("digits", "nycflights13") == digits_spec()
    with pytest.raises(SpecReferenceError, match="set MLSYS_DATASET"):
        spec_or_default(None, None)
    assert resolve_model_name("given", None) == "given"
    assert resolve_model_name(None, "nycflights13") == "flight-delay"
    with pytest.raises(SpecReferenceError, match="MLSYS_MODEL_NAME"):
        resolve_model_name(None, None)


INVALID = {
    # a field's problem, where it is
    "recent": """
from mlsys_core.datasets.digits import digits_spec

def recent():
    data = digits_spec().model_dump()
    return digits_spec().model_validate({**data, "split": {"valid": "P1D", "test": "-P1D"}})
""",
    # a model check's words, as they were written, from a spec built when the file runs
    "BUILT": """
from mlsys_core.datasets.digits import digits_spec

BUILT = digits_spec().model_validate({**digits_spec().model_dump(), "base": "nowhere"})
""",
}


@pytest.mark.parametrize(
    ("attr", "message"),
    [
        ("recent", "invalid spec: split.RecentSplit.test: Input should be greater than 0 seconds"),
        ("BUILT", "failed: invalid spec: spec references undeclared sources: ['nowhere']"),
    ],
)
def test_an_invalid_spec_is_one_line_of_what_is_wrong(
    tmp_path: Path, attr: str, message: str
) -> None:
    """Pydantic's own text ran over several lines and dumped the whole spec as its input;
    a user of `mlsys spec check` reads where each problem is and what it is."""
    path = tmp_path / "invalid.py"
    path.write_text(INVALID[attr])
    with pytest.raises(SpecReferenceError) as err:
        resolve_spec(f"{path}:{attr}")
    said = str(err.value)
    assert message in said, said
    assert "\n" not in said and "errors.pydantic.dev" not in said and "input_value" not in said
    assert "TimeSplit" not in said and "HashSplit" not in said  # not the members meant
