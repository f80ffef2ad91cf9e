"""Prefect flows: one per stage, each runnable alone and as a subflow of ``ml_pipeline``."""
