"""From measured runs to the benchmark's numbers, its targets and its Markdown table.

Plain values in, plain values out: nothing here runs or times anything.

A *run* is one training of one implementation on one configuration in one repeat:
``{"implementation", "repeat", "seconds", "test_top1_accuracy", "peak_rss_mb", ...}``, or
``{"implementation", "repeat", "error"}`` when it failed. Ratios are *peer seconds / our seconds*
within the same repeat (so > 1 means ours is faster), and the reported ratio is their median.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping

REFERENCE = "ours"

#: Minimum peer time / our time, per (configuration, peer). (b) and (c): no slower than any peer.
SPEED_TARGETS: dict[tuple[str, str], float] = {
    ("a", "keras"): 5.0,
    ("a", "torch"): 2.5,
    ("a", "sklearn"): 1.5,
    ("a", "bare"): 1 / 1.1,  # the library at most 10% slower than the bare loop
}
NO_SLOWER_THAN_ANY_PEER = ("b", "c")
#: (a): every peer within this many percentage points of our test top-1 accuracy.
ACCURACY_POINTS = 0.5
#: (c): our matrix-product rate as a fraction of the measured sgemm peak.
SGEMM_FRACTION = {"c": 0.6}
#: Other processes using more than this many cores on average during the runs make a busy machine.
BUSY_CORES = 0.2


def summarise(
    runs: Iterable[Mapping], *, n_train: int, epochs: int, flops: int, reference: str = REFERENCE
) -> dict[str, dict]:
    """Per implementation (in order of first appearance): median training seconds, samples per
    second (``epochs * n_train / median``), GFLOP/s of the matrix products (``flops / median``),
    the median over repeats of peer seconds / reference seconds, the median test top-1 accuracy,
    the largest peak RSS, and every individual value. Failed runs are listed under ``errors``."""
    runs = list(runs)
    reference_seconds = {
        r["repeat"]: r["seconds"]
        for r in runs
        if r["implementation"] == reference and "error" not in r
    }
    names = list(dict.fromkeys(r["implementation"] for r in runs))
    summary: dict[str, dict] = {}
    for name in names:
        mine = [r for r in runs if r["implementation"] == name]
        ok = [r for r in mine if "error" not in r]
        errors = [r["error"] for r in mine if "error" in r]
        if not ok:
            summary[name] = {"median_seconds": None, "errors": errors}
            continue
        seconds = [r["seconds"] for r in ok]
        accuracies = [r["test_top1_accuracy"] for r in ok]
        ratios = [
            r["seconds"] / reference_seconds[r["repeat"]]
            for r in ok
            if r["repeat"] in reference_seconds
        ]
        median = statistics.median(seconds)
        summary[name] = {
            "median_seconds": median,
            "seconds": seconds,
            "samples_per_second": epochs * n_train / median,
            "gflops": flops / median / 1e9,
            "ratio_to_ours": statistics.median(ratios) if ratios else None,
            "ratios_to_ours": ratios,
            "test_top1_accuracy": statistics.median(accuracies),
            "test_top1_accuracies": accuracies,
            "peak_rss_mb": max(r["peak_rss_mb"] for r in ok),
            "peak_rss_after_loading_mb": max(r["peak_rss_after_loading_mb"] for r in ok),
            "errors": errors,
        }
        interference = [r["other_cpu_load"] for r in ok if r.get("other_cpu_load") is not None]
        if interference:
            summary[name]["other_cpu_load"] = statistics.mean(interference)
    return summary


def other_cpu_load(configs: Mapping[str, Mapping]) -> tuple[float, float] | None:
    """Mean and largest number of cores other processes kept busy during the runs (from the
    runs' ``other_cpu_load``), or ``None`` when it was not measured."""
    values = [
        r["other_cpu_load"]
        for entry in configs.values()
        for r in entry.get("runs", ())
        if r.get("other_cpu_load") is not None
    ]
    if not values:
        return None
    return statistics.mean(values), max(values)


def speed_target(config: str, peer: str) -> float | None:
    """The minimum peer time / our time for ``peer`` on ``config``, or ``None``."""
    if (config, peer) in SPEED_TARGETS:
        return SPEED_TARGETS[(config, peer)]
    if config in NO_SLOWER_THAN_ANY_PEER and peer != REFERENCE:
        return 1.0
    return None


def check_targets(configs: Mapping[str, Mapping], sgemm_gflops: float | None) -> list[dict]:
    """Each target of the issue that these results can judge: ``{"config", "check", "target",
    "value", "met"}`` (``met`` is ``None`` when a value is missing)."""
    checks = []
    for name, entry in configs.items():
        results = entry["results"]
        ours = results.get(REFERENCE, {})
        for peer, row in results.items():
            if peer == REFERENCE:
                continue
            target = speed_target(name, peer)
            if target is not None:
                value = row.get("ratio_to_ours")
                checks.append(
                    {
                        "config": name,
                        "check": f"{peer} time / our time",
                        "target": f">= {target:.3g}",
                        "value": value,
                        "met": None if value is None else value >= target,
                    }
                )
            if name == "a" and ours.get("test_top1_accuracy") is not None:
                acc = row.get("test_top1_accuracy")
                gap = None if acc is None else 100 * abs(acc - ours["test_top1_accuracy"])
                checks.append(
                    {
                        "config": name,
                        "check": f"{peer} test top-1 vs ours, points",
                        "target": f"<= {ACCURACY_POINTS}",
                        "value": gap,
                        "met": None if gap is None else gap <= ACCURACY_POINTS,
                    }
                )
        if name in SGEMM_FRACTION:
            gflops = ours.get("gflops")
            fraction = gflops / sgemm_gflops if gflops and sgemm_gflops else None
            checks.append(
                {
                    "config": name,
                    "check": "our GFLOP/s / sgemm peak",
                    "target": f">= {SGEMM_FRACTION[name]}",
                    "value": fraction,
                    "met": None if fraction is None else fraction >= SGEMM_FRACTION[name],
                }
            )
    return checks


# ---------------------------------------------------------------------------- Markdown
def _number(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def render_markdown(report: Mapping) -> str:
    """The report as Markdown: a header line on the machine, one table per configuration, the
    (c) sgemm comparison, the targets, and what was skipped."""
    machine, settings = report["machine"], report["settings"]
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v)
    lines = [
        f"Machine: {machine['cpu_model']}, {machine['cores']} cores; "
        f"{settings['threads']} thread(s) per implementation. {versions}.",
        "",
        f"Median of {settings['repeats']} run(s) per implementation, each in a fresh process, "
        "in alternating order; training time only (no imports, data loading or evaluation). "
        "*time / ours* is the median over repeats of peer seconds / our seconds "
        "(> 1: ours is faster).",
    ]
    interference = other_cpu_load(report["configs"])
    if interference:
        mean, most = interference
        lines[-1] += (
            f" Other processes kept {mean:.2f} cores busy on average during the runs "
            f"(at most {most:.2f})."
        )
        if mean > BUSY_CORES:
            lines += ["", "**The machine was busy** (other processes running): noisy timings."]
    if settings.get("quick") or settings.get("synthetic"):
        lines += [
            "",
            "**Smoke run** (--quick/--synthetic): not the benchmark's configurations; the "
            "numbers say nothing about speed.",
        ]
    labels = report.get("labels", {})
    for name, entry in report["configs"].items():
        lines += [
            "",
            f"### ({name}) {entry['description']}",
            "",
            f"{entry['n_train']:,} training images, {entry['epochs']} epoch(s); "
            f"{entry['training_flops'] / 1e9:,.1f} GFLOP of matrix products.",
            "",
            "| implementation | median train s | samples/s | time / ours | test top-1 | "
            "GFLOP/s | peak RSS MiB |",
            "|---|--:|--:|--:|--:|--:|--:|",
        ]
        for impl, row in entry["results"].items():
            label = labels.get(impl, impl) + (" (ours)" if impl == REFERENCE else "")
            if row.get("median_seconds") is None:
                lines.append(f"| {label} | failed: {row['errors'][0][:80]} | | | | | |")
                continue
            lines.append(
                f"| {label} | {row['median_seconds']:.2f} | {row['samples_per_second']:,.0f} | "
                f"{_number(row['ratio_to_ours'], '.2f')} | {row['test_top1_accuracy']:.4f} | "
                f"{row['gflops']:.1f} | {row['peak_rss_mb']:,.0f} |"
            )
        ours = entry["results"].get(REFERENCE, {})
        peak = report.get("sgemm", {}).get("gflops")
        if name in SGEMM_FRACTION and ours.get("gflops") and peak:
            lines += [
                "",
                f"Ours: {ours['gflops']:.1f} GFLOP/s in the matrix products, "
                f"{100 * ours['gflops'] / peak:.0f}% of the measured sgemm peak "
                f"({peak:.1f} GFLOP/s, NumPy float32 square products, same threads).",
            ]
        for impl, reason in entry.get("not_applicable", {}).items():
            lines += ["", f"Not run: {impl}: {reason}."]
    if report.get("targets"):
        lines += [
            "",
            "### Targets",
            "",
            "| config | check | target | measured | met |",
            "|---|---|--:|--:|---|",
        ]
        for t in report["targets"]:
            met = {True: "yes", False: "**no**", None: "–"}[t["met"]]
            lines.append(
                f"| ({t['config']}) | {t['check']} | {t['target']} | "
                f"{_number(t['value'], '.2f')} | {met} |"
            )
    for peer, reason in report.get("skipped", {}).items():
        lines += ["", f"Skipped {peer}: {reason}."]
    return "\n".join(lines) + "\n"
