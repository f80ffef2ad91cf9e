"""In-process runs switch flow-run heartbeats off; everything else keeps Prefect's default."""

from __future__ import annotations

from prefect.settings import get_current_settings

from flows.embedded import embedded_run


def test_embedded_run_turns_heartbeats_off_only_inside():
    default = get_current_settings().flows.heartbeat_frequency
    assert default is not None
    with embedded_run():
        assert get_current_settings().flows.heartbeat_frequency is None
    assert get_current_settings().flows.heartbeat_frequency == default
