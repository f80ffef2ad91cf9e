"""Micro-batch stream processing on event time over an append-only event log."""
