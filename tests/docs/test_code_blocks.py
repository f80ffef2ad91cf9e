"""Every runnable code block of the README and the docs runs, as written, in a fresh state
folder (see tests/docs/blocks.py for the rules); one test per page or chain of pages."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from contextlib import nullcontext
from pathlib import Path

import pytest

from mlsys_core.stack.prefect_server import SERVER_HOME, prefect_server
from tests.docs.blocks import ROOT, Block, DocsMarkupError, Page, chains, collect, parse_page
from tests.services import seed_prefect_home

PAGES = collect()
CHAINS = chains(PAGES)
BLOCK_TIMEOUT_S = 1200
# The reader's environment: nothing the test session sets for itself.
_DROP = ("MLSYS_", "PREFECT_", "PYTEST_", "GAPMINDER_")
# Blocks that run flows (a chain without any needs no server; one missed only runs slower).
_RUNS_FLOWS = re.compile(
    r"\bflows\b|\bprefect\b|mlsys (pipeline|tune|batch-score|drift|materialize)"
)


def _param(chain: list[Page]):
    slow = any(p.slow for p in chain)
    marks = [pytest.mark.slow, pytest.mark.timeout(3600)] if slow else []
    return pytest.param(chain, id=chain[0].path, marks=marks)


def _runnable(chain: list[Page]) -> bool:
    return any(b.runner or b.title for p in chain for b in p.blocks)


def _workdir(tmp: Path) -> Path:
    """The checkout's top-level entries linked into a scratch folder: blocks run from "the
    repository root" and may write files there without touching the real one."""
    work = tmp / "work"
    work.mkdir()
    for entry in ROOT.iterdir():
        if entry.name in {".mlsys", ".git", "site"}:
            continue
        (work / entry.name).symlink_to(entry)
    return work


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_DROP)}
    venv_bin = str(Path(sys.executable).parent)
    env.update(
        PATH=f"{venv_bin}:{env.get('PATH', '')}",
        MLSYS_STATE_DIR=str(tmp / "state"),
        PREFECT_HOME=str(tmp / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        # A busy CI machine can need more than the default 20 s to start the embedded API.
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="300",
        MPLBACKEND="Agg",
        GIT_PYTHON_REFRESH="quiet",
    )
    return env


def _run(block: Block, work: Path, env: dict[str, str], n: int) -> None:
    if block.title is not None:
        target = work / block.title
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(block.code, encoding="utf-8")
        return
    if block.runner == "python":
        script = work / f".docs_block_{n}.py"
        script.write_text(block.code, encoding="utf-8")
        cmd = [sys.executable, script.name]
    else:
        cmd = ["bash", "-euo", "pipefail", "-c", block.code]
    proc = subprocess.run(
        cmd, cwd=work, env=env, check=False, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S
    )
    if proc.returncode != 0:
        out = (proc.stdout + proc.stderr)[-4000:]
        pytest.fail(
            f"{block.page}:{block.line}: the {block.language} block exited "
            f"{proc.returncode}\n{textwrap.indent(block.code, '    ')}\n"
            f"--- output (tail) ---\n{out}",
            pytrace=False,
        )


@pytest.mark.parametrize("chain", [_param(c) for c in CHAINS if _runnable(c)])
def test_code_blocks_run(chain: list[Page], tmp_path: Path, prefect_db: Path) -> None:
    """The chain's blocks share one Prefect server of their own (``PREFECT_API_URL``), as
    a reader with a running server would: without it, each block's first flow call starts
    and stops a temporary server, about 10 s a block, and the flows run the same."""
    work, env = _workdir(tmp_path), _env(tmp_path)
    (tmp_path / "prefect").mkdir()
    n = 0
    uses_flows = any(_RUNS_FLOWS.search(b.code) for p in chain for b in p.blocks if b.runner)
    if uses_flows:  # the server is the test's, not the reader's: it skips the first migration
        seed_prefect_home(tmp_path / "api" / SERVER_HOME, prefect_db)
    api = prefect_server(tmp_path / "api", base_env=env, timeout=300)
    with api if uses_flows else nullcontext() as server:
        if server is not None:
            env["PREFECT_API_URL"] = server.api
        for page in chain:
            for block in page.blocks:
                if block.runner or block.title:
                    n += 1
                    _run(block, work, env, n)
    assert n > 0


def test_every_block_is_run_shown_or_opted_out_with_a_reason() -> None:
    runnable = [b for p in PAGES.values() for b in p.blocks if b.language in {"python", "bash"}]
    opted_out = [b for b in runnable if b.not_run is not None]
    assert runnable, "no runnable blocks found"
    assert all(b.not_run for b in opted_out)
    # Opting out is the exception: most runnable blocks run.
    assert len(opted_out) < len(runnable) / 2, [f"{b.page}:{b.line}" for b in opted_out]


def test_markers_are_checked() -> None:
    text = "<!-- not-run: -->\n```bash\necho hi\n```\n"
    with pytest.raises(DocsMarkupError, match="needs a reason"):
        parse_page(text, "x.md")
    with pytest.raises(DocsMarkupError, match="unknown docs-test directive"):
        parse_page("<!-- docs-test: fast -->\n", "x.md")
    with pytest.raises(DocsMarkupError, match="never closed"):
        parse_page("```python\nprint(1)\n", "x.md")
    page = parse_page(
        "<!-- not-run: needs a server -->\n\n```bash\nserve\n```\n"
        '```python title="my_spec.py"\nX = 1\n```\n'
        "````text\n```python\nnot a block\n```\n````\n```python\nprint(1)\n```\n",
        "x.md",
    )
    assert [(b.language, b.runner, b.not_run, b.title) for b in page.blocks] == [
        ("bash", None, "needs a server", None),
        ("python", None, None, "my_spec.py"),
        ("text", None, None, None),
        ("python", "python", None, None),
    ]
