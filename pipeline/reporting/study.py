"""The history of an Optuna search, from its points' rows: a table, a plot, parameter importances.

Plain values in, files out (no Hydra, Optuna or MLflow here). Each trial of a search run through
Hydra's Optuna sweeper is one point of the sweep, with its ``result.json`` row
(:mod:`pipeline.reporting.sweep_summary`); trial ``k`` is job ``k``. From those rows:

- ``study.csv``: one row per trial: its number, status, objective (validation top-1 accuracy),
  the best objective so far, and the value it tried for every searched parameter;
- ``study.png``: the objective over trials with the running best, and the importances;
- ``importances.json``: for every searched parameter, the share of the objective's variance
  across the finished trials that the parameter explains on its own (the correlation ratio
  eta^2 of a one-way analysis of variance; a numeric parameter is cut into up to four bins of
  equal counts, at least four trials to a bin). Optuna's own fANOVA importances do not run with
  NumPy 2 under Optuna 2.x, the version Hydra's sweeper needs; eta^2 needs no model and says the
  same for one parameter at a time (interactions are not separated).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.files import write_csv, write_json
from pipeline.reporting.sweep_summary import FINISHED, override_key

OBJECTIVE = "val_top1_accuracy"
#: Bins a numeric parameter is cut into for its importance.
NUMERIC_BINS = 4


def trial_params(row: dict[str, Any], keys: Sequence[str]) -> dict[str, str]:
    """The values trial ``row`` tried for the searched ``keys`` (as its overrides wrote them)."""
    given = {override_key(o): o.split("=", 1)[1] for o in row.get("overrides", []) if "=" in o}
    return {key: given.get(key, "") for key in keys}


def objective(row: dict[str, Any]) -> float:
    """The trial's objective; NaN when it failed or has none."""
    value = row.get(OBJECTIVE)
    if row.get("status") != FINISHED or value is None:
        return math.nan
    return float(value)


def history(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """One dict per trial, by trial number: ``trial``, ``status``, ``objective``,
    ``best_so_far`` and the searched parameters."""
    out, best = [], -math.inf
    for row in sorted(rows, key=lambda r: r.get("job") or 0):
        value = objective(row)
        if math.isfinite(value):
            best = max(best, value)
        out.append(
            {
                "trial": row.get("job"),
                "status": row.get("status"),
                "objective": value,
                "best_so_far": best if math.isfinite(best) else math.nan,
                **trial_params(row, keys),
            }
        )
    return out


def _as_number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _groups(values: list[str]) -> list[int]:
    """A group index per value: its category, or for numbers its bin of equal counts (up to
    :data:`NUMERIC_BINS`, at least four trials per bin where there are enough)."""
    numbers = [_as_number(v) for v in values]
    distinct = sorted(set(values))
    bins = min(NUMERIC_BINS, max(2, len(values) // 4))
    if None in numbers or len(distinct) <= bins:
        return [distinct.index(v) for v in values]
    order = sorted(range(len(values)), key=lambda i: numbers[i])
    groups = [0] * len(values)
    for rank, i in enumerate(order):
        groups[i] = rank * bins // len(values)
    return groups


def importances(trials: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, float]:
    """eta^2 of every searched parameter over the finished trials, largest first (empty with
    fewer than three finished trials or no spread in the objective)."""
    finished = [t for t in trials if math.isfinite(t["objective"])]
    if len(finished) < 3:
        return {}
    y = [t["objective"] for t in finished]
    mean = sum(y) / len(y)
    total = sum((v - mean) ** 2 for v in y)
    if total == 0:
        return {}
    result = {}
    for key in keys:
        groups = _groups([str(t[key]) for t in finished])
        between = 0.0
        for g in set(groups):
            members = [v for v, gv in zip(y, groups, strict=True) if gv == g]
            between += len(members) * (sum(members) / len(members) - mean) ** 2
        result[key] = between / total
    return dict(sorted(result.items(), key=lambda kv: -kv[1]))


def plot(trials: Sequence[dict[str, Any]], weights: dict[str, float], path: Path, title: str):
    """The objective per trial (failed trials marked at the bottom) with the running best, and
    the importances as bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.reporting.plots import save_figure

    fig, (ax, bars) = plt.subplots(
        1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 2]}, layout="constrained"
    )
    done = [t for t in trials if math.isfinite(t["objective"])]
    failed = [t for t in trials if not math.isfinite(t["objective"])]
    ax.plot([t["trial"] for t in done], [t["objective"] for t in done], "o", label="trial")
    ax.step(
        [t["trial"] for t in trials],
        [t["best_so_far"] for t in trials],
        where="post",
        color="C3",
        label="best so far",
    )
    if failed:
        low = min((t["objective"] for t in done), default=0.0)
        ax.plot([t["trial"] for t in failed], [low] * len(failed), "x", color="grey")
        ax.plot([], [], "x", color="grey", label="failed")
    ax.set(xlabel="trial", ylabel="validation top-1 accuracy", title=title)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    if weights:
        names = list(weights)[::-1]
        bars.barh(names, [weights[n] for n in names], color="C0")
        bars.set(xlabel="share of the objective's variance (eta²)", xlim=(0, 1))
        bars.set_title("parameter importance (one at a time)")
    else:
        bars.text(0.5, 0.5, "too few finished trials\nfor importances", ha="center")
        bars.set_axis_off()
    return save_figure(fig, path)


def write_study(
    rows: Sequence[dict[str, Any]], out_dir: str | Path, keys: Sequence[str], name: str = ""
) -> list[Path]:
    """Write ``study.csv``, ``study.png`` and ``importances.json`` of the search whose trials
    are ``rows`` and whose searched parameters are ``keys``; return them."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    trials = history(rows, keys)
    weights = importances(trials, keys)
    columns = ["trial", "status", "objective", "best_so_far", *keys]
    table = out_dir / "study.csv"
    write_csv(table, columns, ([t[c] for c in columns] for t in trials))
    title = f"Optuna search '{name}'" if name else "Optuna search"
    return [
        table,
        plot(trials, weights, out_dir / "study.png", title),
        write_json(out_dir / "importances.json", weights),
    ]
