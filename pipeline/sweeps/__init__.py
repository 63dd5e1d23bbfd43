"""Hydra multirun sweeps (``python -m pipeline.sweep``): the parent run and summary of a sweep
(:mod:`~pipeline.sweeps.parent`, a Hydra callback in the main process) and its points
(:mod:`~pipeline.sweeps.points`, Hydra's task function, in the launcher's workers)."""
