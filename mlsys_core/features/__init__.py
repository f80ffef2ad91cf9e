"""Feature assembly (joins, point in time), fitted preprocessing, and feature-set snapshots."""
