"""The drift report's page: Evidently's ``DataDriftPreset`` page, without the work it drops.

The preset computes a ``ValueDrift`` metric per column, and each renders its own plots
(about half of a report's time), but the preset then draws its page from the legacy drift
table alone and drops those widgets. ``DriftTablePreset`` asks only for the count of drifted
columns, so the same page, widget for widget, is drawn without them. The verdicts never
come from here (``stattests`` computes them).

Imported only where a report is written: Evidently takes seconds to load.
"""

from __future__ import annotations

from collections.abc import Sequence

from evidently.core.container import MetricOrContainer
from evidently.core.report import Context
from evidently.metrics import DriftedColumnsCount
from evidently.presets import DataDriftPreset


class DriftTablePreset(DataDriftPreset):
    def generate_metrics(self, context: Context) -> Sequence[MetricOrContainer]:
        return [DriftedColumnsCount(columns=self.columns, drift_share=self.drift_share)]
