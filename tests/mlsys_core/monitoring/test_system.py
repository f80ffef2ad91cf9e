"""The resource monitor's sampling: the whole process tree, one thread for nested monitors."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import psutil
import pytest

from mlsys_core.monitoring.system import MB, ResourceMonitor, process_tree_rss

CHILD_MB = 150
HOLD = (
    f"import numpy, time; a = numpy.ones({CHILD_MB} * 2**20 // 8); a += 1; "
    "print(1, flush=True); time.sleep(60)"
)


def _rss(proc: psutil.Process) -> int:
    try:
        return proc.memory_info().rss
    except psutil.Error:  # exited meanwhile
        return 0


def _samplers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "resource-monitor"]


def _no_sampler_within(seconds: float) -> bool:
    """True once no sampling thread runs (one may still be ending after an earlier test)."""
    deadline = time.monotonic() + seconds
    while _samplers() and time.monotonic() < deadline:
        time.sleep(0.01)
    return not _samplers()


@pytest.fixture
def child() -> psutil.Process:
    """A child process holding CHILD_MB of memory until the test ends."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"1"
        yield psutil.Process(proc.pid)
    finally:
        proc.kill()
        proc.wait()


def test_the_tree_includes_a_child_and_agrees_with_psutil(child: psutil.Process) -> None:
    me = psutil.Process()
    seen = process_tree_rss()
    # psutil's reading of the same tree (a test worker may have other children too).
    expected = me.memory_info().rss + sum(map(_rss, me.children(recursive=True)))
    assert seen >= me.memory_info().rss + CHILD_MB * MB * 0.9
    assert abs(seen - expected) < 20 * MB  # this process's heap moves a little meanwhile


def test_nested_monitors_share_one_sampler_and_each_sees_its_peak() -> None:
    assert _no_sampler_within(5)
    with ResourceMonitor(interval_s=0.01) as outer:
        with ResourceMonitor(interval_s=0.01) as inner:
            assert len(_samplers()) == 1
            block = np.ones(120 * 1024 * 1024 // 8)
            block += 1
            held = process_tree_rss()
            time.sleep(0.3)  # many sampling intervals: the peak is the thread's, not the exit's
            del block
        inner_peak = inner.peak_rss
        time.sleep(0.05)
    assert inner_peak >= 0.98 * held
    assert outer.peak_rss >= inner_peak
    assert _no_sampler_within(5), "the sampling thread outlived the last monitor"
