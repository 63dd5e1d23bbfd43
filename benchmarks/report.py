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
#: Ours on fixed thread counts (one, all), beside the thread policy's ``ours``.
OURS_FIXED = ("ours-1", "ours-all")
#: The thread policy's time / the best fixed count's, at most: quiet, and with busy processes.
POLICY_QUIET, POLICY_LOADED = 1.05, 1.25
#: (a) with two busy processes: our time / our quiet time, at most.
LOADED_SLOWDOWN = {"a": 2.0}

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
            if peer == REFERENCE or peer in OURS_FIXED:
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
        checks += contention_checks(name, entry)
    return checks


def _check(config: str, check: str, target: str, value: float | None, ok) -> dict:
    return {
        "config": config,
        "check": check,
        "target": target,
        "value": value,
        "met": None if value is None else bool(ok(value)),
    }


def _load_name(busy: int) -> str:
    return "quiet" if busy == 0 else f"{busy} busy"


def contention_checks(name: str, entry: Mapping) -> list[dict]:
    """The thread policy's targets on one configuration, per load: its time within 1.05x
    (quiet) or 1.25x (busy) of the best fixed thread count's; with busy processes, every peer
    still slower than ours; (a) with two busy processes at most 2x its quiet time."""
    checks = []
    loads = {int(n): block for n, block in entry.get("loads", {}).items()}
    for busy, block in sorted(loads.items()):
        results = block["results"]
        fixed = [
            results[f]["ratio_to_ours"]
            for f in OURS_FIXED
            if results.get(f, {}).get("ratio_to_ours") is not None
        ]
        if fixed:
            limit = POLICY_QUIET if busy == 0 else POLICY_LOADED
            checks.append(
                _check(
                    name,
                    f"auto time / best fixed count, {_load_name(busy)}",
                    f"<= {limit}",
                    1 / min(fixed),
                    lambda v, limit=limit: v <= limit,
                )
            )
        if busy:
            for peer, row in results.items():
                if peer == REFERENCE or peer in OURS_FIXED:
                    continue
                checks.append(
                    _check(
                        name,
                        f"{peer} time / our time, {_load_name(busy)}",
                        ">= 1",
                        row.get("ratio_to_ours"),
                        lambda v: v >= 1,
                    )
                )
    if name in LOADED_SLOWDOWN and 0 in loads and 2 in loads:
        quiet = loads[0]["results"].get(REFERENCE, {}).get("median_seconds")
        busy = loads[2]["results"].get(REFERENCE, {}).get("median_seconds")
        limit = LOADED_SLOWDOWN[name]
        checks.append(
            _check(
                name,
                "our time with 2 busy / quiet",
                f"<= {limit}",
                busy / quiet if quiet and busy else None,
                lambda v: v <= limit,
            )
        )
    return checks


def contention_table(entry: Mapping, labels: Mapping[str, str]) -> list[str]:
    """Markdown lines: each implementation's median seconds and time / ours under each load."""
    loads = sorted(entry.get("loads", {}).items(), key=lambda item: int(item[0]))
    if len(loads) < 2:
        return []
    threads = entry.get("threads", {})
    head = ["implementation", "threads"]
    for n, _ in loads:
        head += [f"{_load_name(int(n))} s", f"{_load_name(int(n))}: time / ours"]
    lines = [
        "",
        "Under load (busy background processes the benchmark started; each block of runs "
        "under its own load):",
        "",
        "| " + " | ".join(head) + " |",
        "|---|--:|" + "--:|" * (2 * len(loads)),
    ]
    for impl in loads[0][1]["results"]:
        label = labels.get(impl, impl) + (" (ours, auto)" if impl == REFERENCE else "")
        cells = [label, str(threads.get(impl, "–"))]
        for _, block in loads:
            row = block["results"].get(impl, {})
            cells.append(_number(row.get("median_seconds"), ".2f"))
            cells.append(_number(row.get("ratio_to_ours"), ".2f"))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


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
        f"{settings['threads']} thread(s) per peer, ours the thread policy's "
        f"(`train.blas_threads`, `train.batch_parts: auto`; its threads: workers times BLAS "
        f"threads). {versions}.",
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
            label = labels.get(impl, impl) + (" (ours, auto)" if impl == REFERENCE else "")
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
        lines += contention_table(entry, labels)
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
