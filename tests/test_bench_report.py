"""bench/report.py: README result blocks are generated from the JSON a bench run wrote."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "fixtures" / "bench_result.json"


def _report():
    spec = importlib.util.spec_from_file_location("bench_report", ROOT / "bench" / "report.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being made
    spec.loader.exec_module(module)
    return module


README = """# Benchmarks

## drift.py

<!-- bench-results:drift -->
an old table that no run produced
<!-- /bench-results:drift -->

## serving.py

<!-- bench-results:serving -->
kept: no result file for serving
<!-- /bench-results:serving -->
"""


def test_render_replaces_a_block_with_its_result_and_keeps_the_others(tmp_path: Path):
    report = _report()
    results = tmp_path / "results"
    results.mkdir()
    (results / "drift.json").write_text(FIXTURE.read_text())
    text, missing = report.render(README, report.load_results(results))
    assert "an old table" not in text
    assert missing == ["serving"]
    assert "kept: no result file for serving" in text
    drift = text.split("<!-- bench-results:drift -->\n")[1].split("<!-- /bench-results:drift")[0]
    assert drift.startswith(
        "Measured 2026-12-02 06:00 UTC at commit `0123456789ab` on 2 cores, load average "
        "0.3/1.7 (1 min, before/after), 241 s, published options:"
    )
    assert "```text\n$ .venv/bin/python bench/drift.py\nside      seconds\n" in drift
    assert "ratio ours/evidently 0.038\n```" in drift
    # Rendering again changes nothing: the markers stay and the block is the same.
    again, _ = report.render(text, report.load_results(results))
    assert again == text


def test_the_processor_and_torch_build_are_read_and_shown():
    report = _report()
    here = report.machine()
    assert here["cpu"] and here["torch"] != "not installed"  # the test venv has torch
    result = {**json.loads(FIXTURE.read_text()), **here}
    text, _ = report.render(README, {"drift": result})
    assert f"on 2 cores ({here['cpu']}, torch {here['torch']}), load average" in text


def test_a_failed_run_is_shown_as_failed_not_as_a_table(tmp_path: Path):
    report = _report()
    failed = {**json.loads(FIXTURE.read_text()), "returncode": 1}
    text, _ = report.render(README, {"drift": failed})
    assert "the run failed with exit status 1" in text
    assert "ratio ours/evidently" not in text


def test_numbers_lines_are_lifted_out_of_the_printed_text():
    output, numbers = _report().split_output(
        'a table\nBENCH_JSON {"x10": {"features_ratio": 1.1}}\nlast line\n'
    )
    assert output == "a table\nlast line"
    assert numbers == {"x10": {"features_ratio": 1.1}}


def test_every_bench_script_is_in_the_report():
    names = {b.name for b in _report().BENCHES}
    scripts = {p.stem for p in (ROOT / "bench").glob("*.py") if not p.stem.startswith("_")}
    # stack.py starts the whole production stack (PostgreSQL, MinIO, several servers) and
    # feast_pit.py runs in its own environment with Feast: both are run by hand, not in the
    # report; report.py is this runner itself.
    assert scripts - names == {"report", "stack", "feast_pit"}


def test_a_run_is_dirty_for_changed_code_not_for_the_results_it_rewrote(tmp_path, monkeypatch):
    import subprocess  # noqa: PLC0415

    report = _report()

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "bench" / "results").mkdir(parents=True)
    (tmp_path / "bench" / "results" / "drift.json").write_text("{}\n")
    (tmp_path / "bench" / "drift.py").write_text("print(1)\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    monkeypatch.setattr(report, "ROOT", tmp_path)
    assert not report.commit().endswith("+dirty")
    (tmp_path / "bench" / "results" / "drift.json").write_text('{"rewritten": true}\n')
    assert not report.commit().endswith("+dirty")  # an earlier bench of the same run
    (tmp_path / "bench" / "drift.py").write_text("print(2)\n")
    assert report.commit().endswith("+dirty")
