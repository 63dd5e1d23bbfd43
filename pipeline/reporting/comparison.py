"""The NumPy MLP against TensorFlow/Keras, and against the reference table (stage ``compare``).

The reference document ("Neural Networks from Scratch", section "Empirical results") reports one
NumPy row and one TensorFlow row for the reference configuration. This stage sets them beside the
two rows measured here (the ``train``/``evaluate`` stages and the ``baseline`` stage) with the
reference's columns, computed the reference's way (accuracy, precision and recall micro-averaged
over the one-vs-rest decisions of all classes at a 0.5 threshold), plus top-1 accuracy and macro
F1, and states the speed ratios.

Reads ``params.yaml`` (``model``, ``optimizer``, ``train``, ``seed``, ``tracking``),
``reports/metrics.json`` and ``reports/train/history.csv`` (ours), and
``reports/baseline/metrics.json``, ``history.csv`` and ``info.json`` (TensorFlow's). Writes
``reports/comparison.md`` (the table), ``reports/comparison.json`` (the table under ``table``, the
per-column verdicts under ``quality``, and the ratios and verdicts as top-level numbers, which
``dvc metrics show`` shows) and ``reports/comparison.png`` (both learning curves on one plot, the
metrics side by side, the training times). One MLflow run (``stage=compare``) holds the three
files, and the ratios as metrics.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from pipeline.config import Config
from pipeline.errors import InputError
from pipeline.files import atomic_write, read_history, read_json, write_json
from pipeline.machine import BUSY_CORES, cpu_description
from pipeline.names import (
    BASELINE_REPORTS,
    HISTORY_FILE,
    INFO_FILE,
    METRICS_FILE,
    N_CLASSES,
    N_INPUTS,
    OTHER_LOAD,
    REPORTS,
    RUN_FILE,
    TEST_METRICS_FILE,
    TRAIN_REPORTS,
    TRAIN_SECONDS,
)

log = logging.getLogger("pipeline.compare")


AS_REPORTED = "as reported"
MEASURED = "measured here"

#: The reference document's table ("Neural Networks from Scratch", "Empirical results"), as
#: reported there: test-set metrics, accuracy/precision/recall micro-averaged one-vs-rest at 0.5.
REFERENCE_ROWS: tuple[dict[str, Any], ...] = (
    {
        "key": "reference_numpy",
        "library": "their NumPy",
        "source": AS_REPORTED,
        "epochs": 5,
        "batch_size": 32,
        "learning_rate": 0.1,
        "cross_entropy": 0.166,
        "accuracy": 0.990,
        "precision": 0.950,
        "recall": 0.950,
        "top1_accuracy": None,
        "macro_f1": None,
        "train_seconds": 17.95 * 60,
        "processing_unit": "CPU",
    },
    {
        "key": "reference_tensorflow",
        "library": "TensorFlow",
        "source": AS_REPORTED,
        "epochs": 5,
        "batch_size": 32,
        "learning_rate": 0.1,
        "cross_entropy": 0.290,
        "accuracy": 0.984,
        "precision": 0.941,
        "recall": 0.895,
        "top1_accuracy": None,
        "macro_f1": None,
        "train_seconds": 6.64 * 60,
        "processing_unit": "GPU",
    },
)

#: Quality columns: (row key, column title, True when higher is better).
QUALITY: tuple[tuple[str, str, bool], ...] = (
    ("cross_entropy", "Cross-entropy", False),
    ("accuracy", "Accuracy", True),
    ("precision", "Precision", True),
    ("recall", "Recall", True),
    ("top1_accuracy", "Top-1 accuracy", True),
    ("macro_f1", "Macro F1", True),
)
#: Two values closer than this "match": half a unit of the reference's third decimal.
MATCH_TOLERANCE = 5e-4

# metrics.json names -> row keys
_METRIC_COLUMNS = {
    "test_cross_entropy": "cross_entropy",
    "test_micro_accuracy": "accuracy",
    "test_micro_precision": "precision",
    "test_micro_recall": "recall",
    "test_top1_accuracy": "top1_accuracy",
    "test_macro_f1": "macro_f1",
    TRAIN_SECONDS: "train_seconds",
}


# ---------------------------------------------------------------------------- the numbers
def measured_row(
    key: str,
    library: str,
    metrics: Mapping[str, float],
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    unit: str,
) -> dict[str, Any]:
    """A table row from a ``metrics.json`` of the ``evaluate`` or ``baseline`` stage."""
    missing = sorted(set(_METRIC_COLUMNS) - set(metrics))
    if missing:
        raise InputError(f"the {library} metrics lack {missing}: rerun `dvc repro`")
    row: dict[str, Any] = {
        "key": key,
        "library": library,
        "source": MEASURED,
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
    }
    row.update({column: float(metrics[name]) for name, column in _METRIC_COLUMNS.items()})
    row["processing_unit"] = unit
    # Cores other processes kept busy while it trained (None: not recorded).
    load = metrics.get(OTHER_LOAD)
    row["other_processes_cores"] = float(load) if load is not None else None
    return row


def verdict(ours: float, theirs: float, higher_is_better: bool) -> str:
    """``"beats"``, ``"matches"`` (within :data:`MATCH_TOLERANCE`) or ``"behind"``."""
    gain = (ours - theirs) if higher_is_better else (theirs - ours)
    if abs(gain) <= MATCH_TOLERANCE:
        return "matches"
    return "beats" if gain > 0 else "behind"


def quality_verdicts(ours: Mapping[str, Any], other: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Our row against ``other`` on every quality column both have."""
    verdicts = []
    for column, _, higher in QUALITY:
        if other.get(column) is None or ours.get(column) is None:
            continue
        verdicts.append(
            {
                "against": other["key"],
                "column": column,
                "ours": ours[column],
                "theirs": other[column],
                "difference": ours[column] - other[column],
                "verdict": verdict(ours[column], other[column], higher),
            }
        )
    return verdicts


def build_comparison(ours: Mapping[str, Any], tensorflow: Mapping[str, Any]) -> dict[str, Any]:
    """The content of ``comparison.json`` from our row and TensorFlow's measured row.

    Top-level numbers (what ``dvc metrics show`` shows): the speed-ups of our training over each
    other row (their seconds / ours), both measured training times, and whether ours matches or
    beats each other row on every quality column it reports. The four rows go under ``table``
    and the per-column verdicts under ``quality`` (lists, which ``dvc metrics show`` skips).
    """
    reference_numpy, reference_tensorflow = REFERENCE_ROWS
    others = (tensorflow, reference_numpy, reference_tensorflow)
    quality = [v for other in others for v in quality_verdicts(ours, other)]
    seconds = ours["train_seconds"]
    result: dict[str, Any] = {
        "numpy_train_seconds": seconds,
        "tensorflow_train_seconds": tensorflow["train_seconds"],
        "speedup_vs_tensorflow": tensorflow["train_seconds"] / seconds,
        "speedup_vs_reference_numpy": reference_numpy["train_seconds"] / seconds,
        "speedup_vs_reference_tensorflow": reference_tensorflow["train_seconds"] / seconds,
        "numpy_faster_than_tensorflow": seconds < tensorflow["train_seconds"],
    }
    comparable = timings_comparable(ours, tensorflow)
    if comparable is not None:  # were both times measured on a quiet machine?
        result["timings_comparable"] = comparable
    for row, name in ((ours, "numpy"), (tensorflow, "tensorflow")):
        if row.get("other_processes_cores") is not None:
            result[f"{name}_other_processes_cores"] = row["other_processes_cores"]
    for other in others:
        mine = [v for v in quality if v["against"] == other["key"]]
        name = "tensorflow" if other is tensorflow else other["key"]
        result[f"numpy_matches_or_beats_{name}"] = all(v["verdict"] != "behind" for v in mine)
    result["table"] = [dict(r) for r in (reference_numpy, reference_tensorflow, ours, tensorflow)]
    result["quality"] = quality
    return result


def timings_comparable(*rows: Mapping[str, Any]) -> bool | None:
    """Whether every row's training ran on a quiet machine (other processes kept at most
    :data:`pipeline.machine.BUSY_CORES` busy on average); ``None`` when a row did not record it."""
    loads = [row.get("other_processes_cores") for row in rows]
    if any(load is None for load in loads):
        return None
    return all(load <= BUSY_CORES for load in loads)


def times(ratio: float) -> str:
    """A speed ratio (their time / ours) in words: ``5.2x faster`` or ``5.2x slower``, never
    ``0.2x faster``."""
    if ratio >= 1:
        return f"{ratio:,.1f}x faster" if ratio < 100 else f"{ratio:,.0f}x faster"
    return f"{1 / ratio:,.1f}x slower"


# ---------------------------------------------------------------------------- the report
def format_seconds(seconds: float) -> str:
    """``17.95 min`` from a minute on (as the reference writes it), else ``1.29 s``."""
    if seconds >= 60:
        return f"{seconds / 60:.2f} min"
    return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"


def _best(rows: Sequence[Mapping[str, Any]], column: str, higher: bool) -> float | None:
    values = [round(r[column], 3) for r in rows if r.get(column) is not None]
    if not values:
        return None
    return max(values) if higher else min(values)


def _label(row: Mapping[str, Any]) -> str:
    return f"{row['library']} ({row['source']})"


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The table in Markdown; the best value of each quality column, and the fastest time, bold
    (at the three decimals shown, so ties are bold together)."""
    head = ["Library", "Epochs", "Batch", "LR", *(title for _, title, _ in QUALITY)]
    head += ["Training time", "Unit"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    fastest = min(r["train_seconds"] for r in rows)
    for row in rows:
        cells = [
            _label(row),
            str(row["epochs"]),
            str(row["batch_size"]),
            f"{row['learning_rate']:g}",
        ]
        for column, _, higher in QUALITY:
            value = row.get(column)
            if value is None:
                cells.append("–")
                continue
            text = f"{value:.3f}"
            cells.append(f"**{text}**" if round(value, 3) == _best(rows, column, higher) else text)
        time_text = format_seconds(row["train_seconds"])
        cells.append(f"**{time_text}**" if row["train_seconds"] == fastest else time_text)
        cells.append(row["processing_unit"])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def speed_line(comparison: Mapping[str, Any]) -> str:
    """The speed ratios in words, or, when the machine was busy during either training, the
    measured times and why they are not a speed comparison."""
    ref_numpy, ref_tf, ours, tf = comparison["table"]
    ours_time, tf_time = format_seconds(ours["train_seconds"]), format_seconds(tf["train_seconds"])
    references = (
        f"{times(comparison['speedup_vs_reference_numpy'])} than the reference's NumPy "
        f"({format_seconds(ref_numpy['train_seconds'])}, {ref_numpy['processing_unit']}) and "
        f"{times(comparison['speedup_vs_reference_tensorflow'])} than the reference's "
        f"TensorFlow ({format_seconds(ref_tf['train_seconds'])}, {ref_tf['processing_unit']})"
    )
    comparable = comparison.get("timings_comparable")
    if comparable is False:
        return (
            f"**The machine was busy: these times are not a speed comparison.** Other processes "
            f"kept {ours['other_processes_cores']:.2f} cores busy on average while this NumPy MLP "
            f"trained ({ours_time}) and {tf['other_processes_cores']:.2f} while TensorFlow/Keras "
            f"trained ({tf_time}), on {tf['processing_unit']}; on a busy machine a training can "
            "take many times as long, by how much depends on the moment and on its threads. "
            "Run `dvc repro --force train baseline` again on a quiet machine, or `make bench`, "
            f"to compare speed. Even so, this NumPy MLP trained {references}."
        )
    line = (
        f"This NumPy MLP trained in {ours_time} and TensorFlow/Keras in {tf_time} on the same "
        f"{tf['processing_unit']}: **{times(comparison['speedup_vs_tensorflow'])}** than "
        f"TensorFlow, {references}."
    )
    if comparable is None:
        line += " (How busy the machine was during the two trainings was not recorded.)"
    else:
        busiest = max(ours["other_processes_cores"], tf["other_processes_cores"])
        line += f" Other processes kept at most {busiest:.2f} cores busy during either training."
    return line


def quality_line(comparison: Mapping[str, Any]) -> str:
    """Where ours stands against the measured TensorFlow row, column by column."""
    against_tf = [v for v in comparison["quality"] if v["against"] == "tensorflow"]
    behind = [v for v in against_tf if v["verdict"] == "behind"]
    largest = max(abs(v["difference"]) for v in against_tf)
    if behind:
        names = ", ".join(f"{v['column']} ({v['ours']:.4f} vs {v['theirs']:.4f})" for v in behind)
        head = f"TensorFlow/Keras is ahead of this NumPy MLP on {names}."
    else:
        beats = [v["column"] for v in against_tf if v["verdict"] == "beats"]
        head = "This NumPy MLP matches or beats TensorFlow/Keras on every quality column"
        head += f" (beats it on {', '.join(beats)})." if beats else "."
    return (
        f"{head} Largest difference between the two measured rows: {largest:.2g} "
        f'("matches" means within {MATCH_TOLERANCE:g}, half a unit of the '
        "reference's third decimal)."
    )


def markdown(
    comparison: Mapping[str, Any],
    notes: Mapping[str, str] | None = None,
    figure: str | None = "comparison.png",
) -> str:
    """``comparison.md``: the table, what its columns mean, the speed and quality lines, and
    ``notes`` (``configuration``, ``tensorflow``: a sentence each)."""
    notes = notes or {}
    parts = ["# This NumPy MLP against TensorFlow/Keras on MNIST", ""]
    if notes.get("configuration"):
        parts += [notes["configuration"], ""]
    parts += [
        markdown_table(comparison["table"]),
        "",
        "Metrics on the 10,000 test images. Accuracy, precision and recall are the reference's: "
        "micro-averaged over the one-vs-rest decisions of all ten classes at a 0.5 threshold "
        "(so accuracy counts true negatives and is not top-1 accuracy). Rows marked *as "
        "reported* are copied from the reference document; the others were measured here, "
        "every column computed by the same `mlp.metrics` functions. Training time is wall "
        "time of the training steps only (validation excluded).",
        "",
        speed_line(comparison),
        "",
        quality_line(comparison),
    ]
    if notes.get("tensorflow"):
        parts += ["", notes["tensorflow"]]
    if figure:
        parts += ["", f"![Learning curves and metrics side by side]({figure})"]
    return "\n".join(parts) + "\n"


def curve_gap(
    ours: Sequence[Mapping[str, float]], tensorflow: Sequence[Mapping[str, float]]
) -> float | None:
    """Largest relative difference between the two histories' losses (``None``: not comparable,
    e.g. different numbers of epochs)."""
    if len(ours) != len(tensorflow):
        return None
    gaps = [
        abs(t[key] - o[key]) / abs(o[key])
        for o, t in zip(ours, tensorflow, strict=True)
        for key in ("train_loss", "val_loss")
        if key in o and key in t and o[key]
    ]
    return max(gaps) if gaps else None


# ---------------------------------------------------------------------------- the figure
_STYLE = {
    "ours": {"color": "tab:blue", "marker": "o", "markersize": 7},
    "tensorflow": {"color": "tab:orange", "marker": "x", "markersize": 9},
}
_BAR_COLORS = ("tab:gray", "tab:olive", "tab:blue", "tab:orange")


def figure(
    comparison: Mapping[str, Any],
    ours_history: Sequence[Mapping[str, float]],
    tensorflow_history: Sequence[Mapping[str, float]],
    path: Path,
) -> Path:
    """Both learning curves on one plot (loss, top-1 accuracy), the test metrics of the four
    rows side by side, and their training times on a log scale."""
    fig, ((ax_loss, ax_acc), (ax_bars, ax_time)) = plt.subplots(
        2, 2, figsize=(14, 9.5), gridspec_kw={"height_ratios": [1, 1.1]}
    )
    for key, history, name in (
        ("ours", ours_history, "NumPy MLP"),
        ("tensorflow", tensorflow_history, "TensorFlow/Keras"),
    ):
        epochs = [r["epoch"] for r in history]
        style = _STYLE[key]
        for split, line in (("train", "-"), ("val", "--")):
            if f"{split}_loss" not in history[0]:
                continue
            label = f"{name}, {'training' if split == 'train' else 'validation'}"
            kwargs = {"linestyle": line, "label": label, "fillstyle": "none", **style}
            ax_loss.plot(epochs, [r[f"{split}_loss"] for r in history], **kwargs)
            ax_acc.plot(epochs, [r[f"{split}_accuracy"] for r in history], **kwargs)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="Loss per epoch")
    gap = curve_gap(ours_history, tensorflow_history)
    if gap is not None and gap < 1e-3:
        ax_loss.text(
            0.5,
            0.97,
            f"the two libraries' curves coincide (largest relative difference {gap:.1e})",
            transform=ax_loss.transAxes,
            ha="center",
            va="top",
            fontsize=8,
        )
    ax_acc.set(xlabel="epoch", ylabel="top-1 accuracy", title="Top-1 accuracy per epoch")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)

    rows = comparison["table"]
    n_rows = len(rows)
    width = 0.8 / n_rows
    for i, (row, color) in enumerate(zip(rows, _BAR_COLORS, strict=False)):
        xs, heights = [], []
        for j, (column, _, _) in enumerate(QUALITY):
            if row.get(column) is not None:
                xs.append(j + (i - (n_rows - 1) / 2) * width)
                heights.append(row[column])
        bars = ax_bars.bar(xs, heights, width, label=_label(row), color=color)
        ax_bars.bar_label(bars, fmt="%.3f", fontsize=6, rotation=90, padding=2)
    ax_bars.set_xticks(range(len(QUALITY)), [title for _, title, _ in QUALITY], fontsize=8)
    ax_bars.set(ylim=(0, 1.15), title="Test metrics (cross-entropy: lower is better)")
    ax_bars.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.07), ncols=2)
    ax_bars.grid(axis="y", alpha=0.3)

    labels = [f"{_label(r)}\n{r['processing_unit']}" for r in rows]
    seconds = [r["train_seconds"] for r in rows]
    bars = ax_time.barh(labels, seconds, color=_BAR_COLORS[:n_rows])
    ax_time.bar_label(bars, [format_seconds(s) for s in seconds], padding=3, fontsize=8)
    ax_time.set_xscale("log")
    ax_time.set_xlim(min(seconds) / 2, max(seconds) * 8)
    ax_time.invert_yaxis()
    ax_time.tick_params(axis="y", labelsize=8)
    ax_time.set(xlabel="seconds (log scale)", title="Training time")
    ax_time.grid(axis="x", alpha=0.3)

    fig.suptitle("This NumPy MLP against TensorFlow/Keras, and the reference's reported results")
    fig.tight_layout()
    path = Path(path)
    with atomic_write(path) as fh:
        fig.savefig(fh, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------- the stage
def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("s" if n != 1 else "")


def _configuration(cfg: Config) -> str:
    m, o, t = cfg.model, cfg.optimizer, cfg.train
    sizes = "-".join(map(str, [N_INPUTS, *m.hidden_sizes, N_CLASSES]))
    return (
        f"Configuration (`params.yaml`): {sizes}, {m.hidden_activation} hidden layers, "
        f"{m.output_activation} output, {m.loss} loss, {o.name} (learning rate "
        f"{o.learning_rate:g}), {t.epochs} epochs, batch size {t.batch_size}, {t.dtype}, "
        f"seed {cfg.seed}."
    )


def _tensorflow_note(info: Mapping[str, Any], history: Sequence[Mapping[str, float]]) -> str:
    compiled = "XLA" if info.get("jit_compile") else "a TensorFlow graph (Keras's default on CPU)"
    note = (
        f"TensorFlow {info.get('tensorflow_version')} / Keras {info.get('keras_version')}: "
        f"`model.fit` compiled to {compiled}, {info.get('steps_per_execution')} steps per "
        "execution; started from the NumPy model's initial weights; batches: "
        f"{info.get('batches')}."
    )
    if len(history) > 1:
        first = history[0]["epoch_seconds"]
        rest = statistics.median(r["epoch_seconds"] for r in history[1:])
        note += (
            f" Its first epoch ({format_seconds(first)}) includes tracing the graph; the others "
            f"took {format_seconds(rest)} each (median)."
        )
    return note


def compare(
    cfg: Config,
    reports: Path = REPORTS,
    train_reports: Path = TRAIN_REPORTS,
    baseline: Path = BASELINE_REPORTS,
) -> tuple[dict[str, Any], list[Path]]:
    """Read both runs' reports, write ``comparison.md``, ``.json`` and ``.png`` under
    ``reports``; returns the comparison and the files written."""
    ours_metrics = read_json(reports / TEST_METRICS_FILE.name, "evaluate")
    tf_metrics = read_json(baseline / METRICS_FILE, "baseline")
    tf_info = read_json(baseline / INFO_FILE, "baseline")
    ours_history = read_history(train_reports / HISTORY_FILE, "train")
    tf_history = read_history(baseline / HISTORY_FILE, "baseline")

    t, o = cfg.train, cfg.optimizer
    for key, expected in (
        ("epochs", t.epochs),
        ("batch_size", t.batch_size),
        ("learning_rate", o.learning_rate),
    ):
        if key in tf_info and tf_info[key] != expected:
            log.warning(
                "the baseline ran with %s = %s but params.yaml says %s: run `dvc repro`",
                key,
                tf_info[key],
                expected,
            )
    run_file = train_reports / RUN_FILE
    run_record = read_json(run_file) if run_file.exists() else {}
    threads = run_record.get("blas_threads")
    ours = measured_row(
        "numpy",
        "this NumPy MLP",
        ours_metrics,
        epochs=t.epochs,
        batch_size=t.batch_size,
        learning_rate=o.learning_rate,
        unit=cpu_description() + (f", {_count(threads, 'BLAS thread')}" if threads else ""),
    )
    tensorflow = measured_row(
        "tensorflow",
        "TensorFlow/Keras",
        tf_metrics,
        epochs=tf_info.get("epochs", t.epochs),
        batch_size=tf_info.get("batch_size", t.batch_size),
        learning_rate=tf_info.get("learning_rate", o.learning_rate),
        unit=tf_info.get("processing_unit", "unknown")
        + (f", {_count(tf_info['threads'], 'thread')}" if tf_info.get("threads") else ""),
    )
    tensorflow["mlflow_run_id"] = tf_info.get("mlflow_run_id")
    if run_record.get("run_id"):
        ours["mlflow_run_id"] = run_record["run_id"]
    comparison = build_comparison(ours, tensorflow)
    notes = {
        "configuration": _configuration(cfg),
        "tensorflow": _tensorflow_note(tf_info, tf_history),
    }

    written = [write_json(reports / "comparison.json", comparison)]
    with atomic_write(reports / "comparison.md", "w") as fh:
        fh.write(markdown(comparison, notes))
    written.append(reports / "comparison.md")
    written.append(figure(comparison, ours_history, tf_history, reports / "comparison.png"))
    return comparison, written


def comparison_metrics(comparison: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of ``comparison`` as metrics: the ratios and times, the verdicts as 1.0 or
    0.0, and each measured row's quality columns as ``<row>_<column>``."""
    metrics = {k: float(v) for k, v in comparison.items() if isinstance(v, (int, float))}
    for row in comparison["table"]:
        if row["source"] == MEASURED:
            for column, _, _ in QUALITY:
                metrics[f"{row['key']}_{column}"] = float(row[column])
    return metrics
