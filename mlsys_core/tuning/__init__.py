"""Hyperparameter search with Optuna: typed search spaces, samplers, pruners, studies in RDB
storage, and one trial as a plain function that any worker (a thread, a process, another
machine) can run against the shared study."""
