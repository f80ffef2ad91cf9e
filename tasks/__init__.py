"""Thin Prefect task adapters over ``mlsys_core``: orchestration settings, one call each."""
