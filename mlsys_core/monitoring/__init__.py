"""Drift checks with Evidently."""
