"""Hydra's Optuna sweeper, ending a search whose every trial failed as a grid sweep ends.

The plugin asks Optuna for the best trial once the trials are done, and Optuna raises when none
finished; Hydra would print that as a traceback and leave the sweep's parent run open.
:class:`OptunaSweeper` (``hydra.sweeper._target_`` in ``conf/hparams_search/``) closes the sweep
instead, as :class:`pipeline.sweeps.parent.SweepCallback` does at the end of a grid: the summary
written, the parent run FAILED, one ``error:`` line, exit status 1.
"""

from __future__ import annotations

from hydra_plugins.hydra_optuna_sweeper import optuna_sweeper


class OptunaSweeper(optuna_sweeper.OptunaSweeper):
    def sweep(self, arguments: list[str]) -> None:
        try:
            return super().sweep(arguments)
        except ValueError as exc:
            if "No trials are completed" not in str(exc):
                raise
        # Imported here: Hydra imports every plugin module whenever it starts (DVC's too).
        from pipeline.sweeps import parent
        from pipeline.sweeps.state import sweep_dir_of

        # SystemExit is not an Exception: Hydra lets it through without a traceback.
        raise SystemExit(parent.finish_sweep(sweep_dir_of(self.sweeper.config.hydra)) or 1)
