"""The documentation site builds with ``mkdocs build --strict``: a broken link, a page
missing from the nav, an anchor that does not exist or a reference to code that moved
fails the build, and so the test suite."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

_LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_readme_links_point_at_files() -> None:
    """The README is not part of the site (the strict build does not see it): its relative
    links are checked here."""
    links = _LINK.findall((ROOT / "README.md").read_text(encoding="utf-8"))
    local = [link.split("#")[0] for link in links if not link.startswith(("http", "#"))]
    assert local, "the README links into the docs"
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, missing


@pytest.mark.slow  # ~15-60 s: mkdocstrings imports and renders the code's API
def test_site_builds_strict_without_warnings(tmp_path: Path) -> None:
    site = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    assert "WARNING" not in log, log[-6000:]
    # The pages exist, the generated reference holds the typed configs and the flows.
    assert (site / "index.html").exists() and (site / "tutorial.html").exists()
    config = (site / "reference" / "config.html").read_text()
    assert "DatasetSpec" in config and "state_dir" in config
    flows = (site / "reference" / "flows.html").read_text()
    assert "ml_pipeline" in flows and "train_config" in flows
