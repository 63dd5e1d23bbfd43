"""The summary of a sweep: a table of every point, a heatmap, and the best point.

Plain values in, files out; no Hydra or MLflow here. Each point of a sweep writes one
``result.json`` (a flat dict, see :data:`COLUMNS`, plus its ``overrides`` and ``config``) in its
job folder; :func:`load_results` collects them and :func:`write_summary` turns them into

- ``summary.csv`` and ``summary.md``: one row per point (architecture, learning rate, the other
  overrides that vary across the sweep, validation and test top-1 accuracy and cross-entropy,
  seconds, status, and the reason a point failed);
- ``heatmap.png``: validation top-1 accuracy over architecture x learning rate;
- ``best.json``, ``best_point.json`` and ``best_config.yaml``: the best point, chosen on
  validation top-1 accuracy (ties: lower validation cross-entropy, then the earlier point). DVC
  shows ``best.json`` as a metric, so it holds numbers only (the point counts, the best point's
  job number, learning rate and scores); ``best_point.json`` names it (its MLflow run, overrides,
  architecture and registered model version); ``best_config.yaml`` is its whole configuration.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from pipeline.files import atomic_write, write_json
from pipeline.names import CHAMPION, RESULT_FILE

FINISHED, FAILED = "FINISHED", "FAILED"

#: Columns of ``summary.csv``, in order.
COLUMNS = (
    "job",
    "architecture",
    "model",
    "layer_sizes",
    "hidden_activation",
    "optimizer",
    "learning_rate",
    "overrides",
    "val_top1_accuracy",
    "val_cross_entropy",
    "test_top1_accuracy",
    "test_cross_entropy",
    "train_seconds",
    "seconds",
    "status",
    "reason",
    "run_id",
    "pid",
)
# Overrides shown in their own columns rather than under "overrides".
_OWN_COLUMNS = ("model", "optimizer.learning_rate")


# ---------------------------------------------------------------------------- reading
def load_results(sweep_dir: str | Path, parent_run_id: str | None = None) -> list[dict[str, Any]]:
    """Every ``result.json`` below ``sweep_dir`` (of the sweep whose MLflow parent run is
    ``parent_run_id``, when given: a reused folder may hold older sweeps' points), by job."""
    rows = []
    for path in sorted(Path(sweep_dir).rglob(RESULT_FILE)):
        try:
            row = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if parent_run_id is not None and row.get("parent_run_id") != parent_run_id:
            continue
        rows.append(row)
    return sorted(rows, key=lambda r: (r.get("job") is None, r.get("job") or 0))


def override_key(override: str) -> str:
    """``"+train.epochs=3"`` -> ``"train.epochs"``; ``"model=wide"`` -> ``"model"``."""
    return override.split("=", 1)[0].lstrip("+~")


def varying_overrides(rows: Sequence[dict[str, Any]]) -> tuple[set[str], list[str]]:
    """The override keys whose value differs between points, and the overrides that every point
    shares (for example ``train.epochs=1`` given once on the command line)."""
    values: dict[str, set[str]] = {}
    for row in rows:
        present = {override_key(o): o for o in row.get("overrides", [])}
        for key in present.keys() | values.keys():
            values.setdefault(key, set()).add(present.get(key, ""))
    varying = {key for key, seen in values.items() if len(seen) > 1}
    common = sorted(
        next(iter(seen)) for key, seen in values.items() if key not in varying and next(iter(seen))
    )
    return varying, common


def other_overrides(row: dict[str, Any], varying: set[str]) -> str:
    """The point's overrides of varying keys other than the architecture and learning rate."""
    return " ".join(
        o
        for o in row.get("overrides", [])
        if override_key(o) in varying and override_key(o) not in _OWN_COLUMNS
    )


def architecture(row: dict[str, Any]) -> str:
    """``"reference 784-32-16-10 tanh"``: the model's name, layer sizes and hidden activation."""
    sizes = row.get("layer_sizes")
    parts = [
        str(row.get("model") or "?"),
        "-".join(map(str, sizes)) if sizes else "",
        str(row.get("hidden_activation") or ""),
    ]
    return " ".join(p for p in parts if p)


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


# ---------------------------------------------------------------------------- deciding
def best_point(rows: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """The finished point with the highest validation top-1 accuracy (ties: lower validation
    cross-entropy, then the lower job number); ``None`` if no finished point has one."""
    candidates = [
        r
        for r in rows
        if r.get("status") == FINISHED and math.isfinite(_number(r.get("val_top1_accuracy")))
    ]
    if not candidates:
        return None

    def key(r: dict[str, Any]) -> tuple[float, float, int]:
        loss = _number(r.get("val_cross_entropy"))
        return (
            -_number(r["val_top1_accuracy"]),
            loss if math.isfinite(loss) else math.inf,
            r.get("job") or 0,
        )

    return min(candidates, key=key)


def exit_status(rows: Sequence[dict[str, Any]]) -> int:
    """0 when at least one point finished; 1 when every point failed (or none ran)."""
    return 0 if any(r.get("status") == FINISHED for r in rows) else 1


def counts(rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    finished = sum(r.get("status") == FINISHED for r in rows)
    return {"points": len(rows), "points_finished": finished, "points_failed": len(rows) - finished}


def table(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One dict per point with the keys of :data:`COLUMNS`."""
    varying, _ = varying_overrides(rows)
    out = []
    for row in rows:
        entry = {column: row.get(column) for column in COLUMNS}
        entry["architecture"] = architecture(row)
        entry["overrides"] = other_overrides(row, varying)
        if isinstance(entry["layer_sizes"], list):
            entry["layer_sizes"] = "-".join(map(str, entry["layer_sizes"]))
        out.append(entry)
    return out


# ---------------------------------------------------------------------------- writing
def write_csv(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    path = Path(path)
    with atomic_write(path, "w") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(COLUMNS))
        writer.writeheader()
        for entry in table(rows):
            writer.writerow({k: "" if v is None else v for k, v in entry.items()})
    return path


def _fmt(value: Any, digits: int = 4) -> str:
    number = _number(value)
    if value is None or not math.isfinite(number):
        return "–"
    return f"{number:.{digits}f}"


def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(
    rows: Sequence[dict[str, Any]],
    title: str = "Sweep",
    folder: str = ".",
    registry: dict[str, Any] | None = None,
) -> str:
    """The summary as a Markdown document: counts, the best point (and where its model was
    registered), the table, the failures. ``folder``: where the summary is written, as the
    reader will type it."""
    n = counts(rows)
    best = best_point(rows)
    _, common = varying_overrides(rows)
    lines = [
        f"# {title}",
        "",
        f"{n['points']} points: {n['points_finished']} finished, {n['points_failed']} failed.",
    ]
    if common:
        lines += ["", "Overrides shared by every point: `" + " ".join(common) + "`"]
    lines.append("")
    if best is None:
        lines.append("No best point: no point finished with a validation accuracy.")
    else:
        lines.append(
            f"Best point, on validation top-1 accuracy: #{best.get('job')} "
            f"{architecture(best)}, learning rate {_number(best.get('learning_rate')):g}"
            f" — validation {_fmt(best.get('val_top1_accuracy'))}, "
            f"test {_fmt(best.get('test_top1_accuracy'))} (MLflow run `{best.get('run_id')}`). "
            f"Its whole configuration is `{folder}/best_config.yaml`; to train it again:"
        )
        lines += [
            "",
            "```",
            f"python -m pipeline.train --params {folder}/best_config.yaml "
            "--model models/best.npz --reports reports/best",
            "```",
            "",
            "Its overrides: `" + (" ".join(best.get("overrides", [])) or "(none)") + "`",
        ]
        if registry and registry.get("model_version"):
            model = f"{registry['registered_model']}/{registry['model_version']}"
            lines += ["", f"Its model is registered as `models:/{model}`"]
            lines[-1] += (
                f", now the champion (`models:/{registry['registered_model']}@{CHAMPION}`)."
                if registry.get("champion")
                else "; the champion stays, as good or better on the same validation data."
            )
    lines += [
        "",
        "| # | architecture | learning rate | other overrides | val top-1 | val CE "
        "| test top-1 | test CE | seconds | status |",
        "|---:|---|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for entry in table(rows):
        marker = " **(best)**" if best is not None and entry["job"] == best.get("job") else ""
        lines.append(
            "| "
            + " | ".join(
                _md_cell(c)
                for c in (
                    entry["job"],
                    entry["architecture"],
                    f"{_number(entry['learning_rate']):g}",
                    entry["overrides"] or "",
                    _fmt(entry["val_top1_accuracy"]),
                    _fmt(entry["val_cross_entropy"]),
                    _fmt(entry["test_top1_accuracy"]),
                    _fmt(entry["test_cross_entropy"]),
                    _fmt(entry["train_seconds"], 1),
                    f"{entry['status']}{marker}",
                )
            )
            + " |"
        )
    failed = [r for r in rows if r.get("status") != FINISHED]
    if failed:
        lines += ["", "## Failed points", ""]
        lines += [
            f"- #{r.get('job')} `{' '.join(r.get('overrides', []))}`: {r.get('reason')}"
            for r in failed
        ]
    return "\n".join(lines) + "\n"


def heatmap(rows: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Validation top-1 accuracy per architecture (rows, smallest first) x learning rate
    (columns); the best of several points in a cell; failed cells grey and marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from pipeline.reporting.plots import save_figure

    archs: dict[str, float] = {}
    for row in rows:
        sizes = row.get("layer_sizes") or []
        archs.setdefault(architecture(row), float(sum(sizes[1:-1])) if sizes else math.inf)
    arch_names = sorted(archs, key=lambda a: (archs[a], a))
    rates = sorted(
        {_number(r.get("learning_rate")) for r in rows}, key=lambda x: (math.isnan(x), x)
    )
    values = np.full((len(arch_names), len(rates)), np.nan)
    tried = np.zeros(values.shape, dtype=int)
    for row in rows:
        i = arch_names.index(architecture(row))
        j = (
            rates.index(_number(row.get("learning_rate")))
            if not math.isnan(_number(row.get("learning_rate")))
            else len(rates) - 1
        )
        tried[i, j] += 1
        acc = _number(row.get("val_top1_accuracy"))
        if row.get("status") == FINISHED and math.isfinite(acc):
            values[i, j] = acc if np.isnan(values[i, j]) else max(values[i, j], acc)

    fig, ax = plt.subplots(
        figsize=(max(4.5, 1.4 * len(rates) + 3), max(2.5, 0.7 * len(arch_names) + 1.5))
    )
    if not rows:
        ax.text(0.5, 0.5, "no point reported a result", ha="center", va="center")
        ax.set_axis_off()
        ax.set_title(title or "Validation top-1 accuracy")
        return save_figure(fig, Path(path))
    cmap = plt.get_cmap("viridis").with_extremes(bad="#d9d9d9")
    finite = values[np.isfinite(values)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if vmin == vmax:
        vmin, vmax = vmin - 0.005, vmax + 0.005
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    best = best_point(rows)
    for i in range(len(arch_names)):
        for j in range(len(rates)):
            if not tried[i, j]:
                continue
            if np.isnan(values[i, j]):
                text, color = "failed", "black"
            else:
                text = f"{values[i, j]:.4f}"
                color = "black" if values[i, j] > vmin + 0.6 * (vmax - vmin) else "white"
                if tried[i, j] > 1:
                    text += f"\n(best of {tried[i, j]})"
            weight = "normal"
            if (
                best is not None
                and architecture(best) == arch_names[i]
                and _number(best.get("learning_rate")) == rates[j]
            ):
                weight = "bold"
                text = "★ " + text
            ax.text(
                j, i, text, ha="center", va="center", color=color, fontsize=9, fontweight=weight
            )
    ax.set_xticks(range(len(rates)), [f"{r:g}" for r in rates])
    ax.set_yticks(range(len(arch_names)), arch_names)
    ax.set(xlabel="learning rate", ylabel="architecture")
    ax.set_title(title or "Validation top-1 accuracy")
    fig.colorbar(image, ax=ax, label="validation top-1 accuracy")
    fig.tight_layout()
    return save_figure(fig, Path(path))


def best_summary(rows: Sequence[dict[str, Any]]) -> dict[str, float | int]:
    """``best.json``, numbers only (a DVC metric): the counts, and the best point's job number,
    learning rate and scores as ``best_<key>``."""
    out: dict[str, float | int] = dict(counts(rows))
    best = best_point(rows)
    if best is not None:
        for key in (
            "job",
            "learning_rate",
            "val_top1_accuracy",
            "val_cross_entropy",
            "test_top1_accuracy",
            "test_cross_entropy",
            "train_seconds",
        ):
            value = best.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[f"best_{key}"] = value
    return out


def best_record(
    rows: Sequence[dict[str, Any]], registry: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``best_point.json``: which point is the best (``None`` values when none finished): its
    job, MLflow run, overrides and architecture, and ``registry`` (its registered model version
    and whether it is the champion)."""
    best = best_point(rows) or {}
    return {
        "job": best.get("job"),
        "run_id": best.get("run_id"),
        "overrides": " ".join(best.get("overrides", [])) if best else None,
        "architecture": architecture(best) if best else None,
        **(registry or {}),
    }


def _display(path: Path) -> str:
    """``path`` relative to the working directory when it is below it, else absolute."""
    try:
        return Path(path).absolute().relative_to(Path.cwd()).as_posix()
    except ValueError:
        return Path(path).absolute().as_posix()


def write_summary(
    rows: Sequence[dict[str, Any]],
    out_dir: str | Path,
    name: str = "sweep",
    registry: dict[str, Any] | None = None,
) -> list[Path]:
    """Write every summary file of the sweep ``name`` into ``out_dir`` (replacing an older
    summary); return them. ``registry``: where the best point's model was registered
    (``best_point.json``)."""
    title = f"Sweep `{name}`"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [
        write_csv(rows, out_dir / "summary.csv"),
        out_dir / "summary.md",
        heatmap(rows, out_dir / "heatmap.png", f"Sweep '{name}': validation top-1 accuracy"),
        write_json(out_dir / "best.json", best_summary(rows)),
        write_json(out_dir / "best_point.json", best_record(rows, registry)),
    ]
    with atomic_write(out_dir / "summary.md", "w") as fh:
        fh.write(markdown(rows, title, _display(out_dir), registry))
    best = best_point(rows)
    best_config = out_dir / "best_config.yaml"
    if best is not None and best.get("config"):
        with atomic_write(best_config, "w") as fh:
            fh.write(
                f"# The best point of the sweep `{name}` (job #{best.get('job')}, validation "
                f"top-1 accuracy {_fmt(best.get('val_top1_accuracy'))}), overrides: "
                f"{' '.join(best.get('overrides', [])) or '(none)'}\n"
            )
            yaml.safe_dump(best["config"], fh, sort_keys=False, default_flow_style=None)
    else:
        with atomic_write(best_config, "w") as fh:
            fh.write(f"# The sweep `{name}`: no point finished, so no best configuration.\n{{}}\n")
    written.append(best_config)
    return written
