"""mlsys compute: pure data, feature, training, registry and monitoring code.

Nothing in this package imports prefect; orchestration lives in ``tasks/`` and ``flows/``.
"""

__version__ = "0.1.0"
