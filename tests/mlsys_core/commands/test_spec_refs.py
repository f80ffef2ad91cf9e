"""Every ``mlsys`` command that works on a dataset takes ``--spec REF``, and a reference that
names nothing is one line saying what was tried, before any flow, server or model starts."""

from __future__ import annotations

import pytest

from mlsys_core.cli import build_parser, main

COMMANDS = [
    ["pipeline"],
    ["tune"],
    ["batch-score"],
    ["drift"],
    ["materialize"],
    ["stream"],
    ["train"],
    ["serve"],
    ["ab-test"],
    ["study"],
    ["serve-cluster"],
    ["features", "get", "carrier=UA"],
    ["parity", "--url", "http://127.0.0.1:9"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_a_bad_reference_is_one_line(command: list[str], capsys: pytest.CaptureFixture) -> None:
    assert main([*command, "--spec", "no/such/file.py:churn"]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"mlsys {command[0]}: dataset reference 'no/such/file.py:churn': no file no/such/file.py\n"
    )


def test_every_dataset_command_has_the_option() -> None:
    parser = build_parser()
    for command in COMMANDS:
        args = parser.parse_args([*command, "--spec", "digits"])
        assert args.spec == "digits"
