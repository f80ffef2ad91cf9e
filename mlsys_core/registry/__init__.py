"""The MLflow model: its pyfunc wrapper, registration, lineage tags and promotion."""
