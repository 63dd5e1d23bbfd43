"""Mutation testing: plant one realistic bug at a time and check that the tests catch it.

``make mutation`` (``python tests/mutants.py``) copies the project's files to a temporary folder,
then for each mutant below replaces one snippet of one file (``old`` -> ``new``, ``old`` found
exactly once), runs the tests that guard that code (``-x``: the first failure kills the mutant)
and puts the file back. A mutant the tests do not catch *survives*: either a hole in the tests,
or a change that does not alter behaviour (then it says why under ``equivalent``).

The mutants cover the library (``mlp/``: maths, optimisers, rules, metrics, schedules, stopping,
regularisation) and the pipeline's decisions: the choice of the best point, the summaries and the
comparison, the config rules, the way config keys reach the library, the download's retries.

    python tests/mutants.py                 # all, one at a time
    python tests/mutants.py --list          # ids and descriptions
    python tests/mutants.py rules-positive-zero best-on-test   # some, by id
    python tests/mutants.py --out mutation.md                  # also write the report

Exit status 0 when every mutant not marked equivalent was killed, 1 otherwise. It is not part of
``make test``: it runs the selected fast tests once per mutant (under half an hour on two busy
cores).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from helpers.project import copy_working_tree


@dataclass(frozen=True)
class Mutant:
    id: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]
    what: str
    equivalent: str = ""  # why the change cannot alter behaviour, when it cannot
    k: str = ""  # a pytest -k expression narrowing the tests (parametrised cases by key)


BOUNDARIES = "tests/test_boundaries.py"
KEYS = "tests/test_config_keys.py"
RULES = "tests/test_config_rules.py"
DECISIONS = "tests/test_decisions.py"

MUTANTS: tuple[Mutant, ...] = (
    # ------------------------------------------------------------------ mlp: prediction, metrics
    Mutant(
        "predict-half-is-one",
        "mlp/network.py",
        "return (out[:, 0] > 0.5).astype(np.intp)",
        "return (out[:, 0] >= 0.5).astype(np.intp)",
        (BOUNDARIES,),
        "single output: exactly 0.5 predicts class 1",
    ),
    Mutant(
        "fit-accuracy-half-is-one",
        "mlp/network.py",
        'np.greater(out[:, 0], 0.5, out=self.predicted[lo:hi], casting="unsafe")',
        'np.greater_equal(out[:, 0], 0.5, out=self.predicted[lo:hi], casting="unsafe")',
        (BOUNDARIES,),
        "fit's epoch accuracy: exactly 0.5 counts as class 1",
    ),
    Mutant(
        "micro-threshold-inclusive",
        "mlp/metrics.py",
        "decided = probs > threshold",
        "decided = probs >= threshold",
        ("tests/test_mlp_metrics.py",),
        "one-vs-rest decision positive at exactly the threshold",
    ),
    Mutant(
        "macro-f1-is-recall",
        "mlp/metrics.py",
        '"macro_f1": float(pc["f1"].mean()),',
        '"macro_f1": float(pc["recall"].mean()),',
        ("tests/test_mlp_metrics.py",),
        "macro F1 reports the macro recall",
    ),
    Mutant(
        "cross-entropy-sum",
        "mlp/metrics.py",
        "return float(-np.mean(np.log(p)))",
        "return float(-np.sum(np.log(p)))",
        ("tests/test_mlp_metrics.py",),
        "cross-entropy summed instead of averaged",
    ),
    Mutant(
        "sse-without-half",
        "mlp/losses.py",
        "return float(0.5 * np.sum(diff * diff))",
        "return float(np.sum(diff * diff))",
        ("tests/test_mlp_gradients.py",),
        "SSE loss value without its 1/2",
    ),
    # ------------------------------------------------------------------ mlp: optimisers
    Mutant(
        "nesterov-is-plain-momentum",
        "mlp/optimizers.py",
        "            if self.nesterov:\n                p += mu * v\n                p -= g\n",
        "            if self.nesterov:\n                p += v\n",
        ("tests/test_mlp_optimizers.py",),
        "Nesterov steps like plain momentum",
    ),
    Mutant(
        "weight-decay-on-biases",
        "mlp/optimizers.py",
        "if p.ndim >= 2:",
        "if p.ndim >= 1:",
        ("tests/test_mlp_optimizers.py",),
        "L2 weight decay applied to biases too",
    ),
    Mutant(
        "adam-no-bias-correction",
        "mlp/optimizers.py",
        "m_scale = 1 / (1 - b1**self.t)",
        "m_scale = 1.0",
        ("tests/test_mlp_optimizers.py",),
        "Adam without the first moment's bias correction",
    ),
    Mutant(
        "adam-epsilon-inside-sqrt",
        "mlp/optimizers.py",
        "denom = np.sqrt(v * v_scale)\n            denom += self.epsilon",
        "denom = np.sqrt(v * v_scale + self.epsilon)",
        ("tests/test_mlp_optimizers.py",),
        "Adam's epsilon under the square root",
    ),
    # ------------------------------------------------------------------ mlp: rules
    Mutant(
        "rules-positive-zero",
        "mlp/rules.py",
        "math.isfinite(number) and number > 0)",
        "math.isfinite(number) and number >= 0)",
        ("tests/test_mlp_rules.py", RULES + "::test_library_rules_at_their_boundaries"),
        "positive() accepts 0",
    ),
    Mutant(
        "rules-non-negative-inf",
        "mlp/rules.py",
        "math.isfinite(number) and number >= 0)",
        "number >= 0)",
        ("tests/test_mlp_rules.py", RULES + "::test_library_rules_at_their_boundaries"),
        "non_negative() accepts infinity",
    ),
    Mutant(
        "rules-fraction-one",
        "mlp/rules.py",
        "and number < 1):",
        "and number <= 1):",
        ("tests/test_mlp_rules.py", RULES + "::test_fraction_at_its_boundaries"),
        "fraction() accepts 1",
    ),
    Mutant(
        "rules-non-negative-int-minus-one",
        "mlp/rules.py",
        "not isinstance(value, numbers.Integral) or value < 0:",
        "not isinstance(value, numbers.Integral) or value < -1:",
        (RULES + "::test_library_rules_at_their_boundaries",),
        "non_negative_int() accepts -1",
    ),
    Mutant(
        "nesterov-without-momentum",
        "mlp/optimizers.py",
        "        if nesterov and not self.momentum:\n            raise",
        "        if False:\n            raise",
        (RULES + "::test_the_rule_rejects_naming_the_key",),
        "Nesterov accepted without momentum",
        k="nesterov",
    ),
    # ------------------------------------------------------------------ mlp: training options
    Mutant(
        "step-decay-every-epoch",
        "mlp/schedules.py",
        "return self.gamma ** ((epoch - 1) // self.step_size)",
        "return self.gamma ** (epoch - 1)",
        ("tests/test_mlp_regularization.py",),
        "step decay drops every epoch, ignoring step_size",
    ),
    Mutant(
        "early-stopping-min-delta-ignored",
        "mlp/stopping.py",
        "return value > self.best + self.min_delta",
        "return value > self.best",
        ("tests/test_mlp_regularization.py", KEYS + "::test_key_reaches_the_library_as_documented"),
        "early stopping ignores min_delta on accuracy",
        k="stop or min_delta",
    ),
    Mutant(
        "early-stopping-patience-off-by-one",
        "mlp/stopping.py",
        "return self.wait >= self.patience",
        "return self.wait > self.patience",
        ("tests/test_mlp_regularization.py",),
        "early stopping waits one epoch too many",
    ),
    Mutant(
        "dropout-not-inverted",
        "mlp/regularization.py",
        "uniform *= 1 / (1 - rate)",
        "uniform *= 1.0",
        ("tests/test_mlp_regularization.py",),
        "dropout keeps units unscaled",
    ),
    # ------------------------------------------------------------------ config -> library
    Mutant(
        "build-drops-nesterov",
        "pipeline/training/build.py",
        "o.learning_rate, momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay",
        "o.learning_rate, momentum=o.momentum, weight_decay=o.weight_decay",
        (KEYS + "::test_key_reaches_the_library_as_documented",),
        "optimizer.nesterov never reaches mlp.SGD",
        k="nesterov",
    ),
    Mutant(
        "build-swaps-adam-betas",
        "pipeline/training/build.py",
        "Adam(o.learning_rate, o.beta1, o.beta2, o.epsilon",
        "Adam(o.learning_rate, o.beta2, o.beta1, o.epsilon",
        (KEYS + "::test_key_reaches_the_library_as_documented",),
        "Adam built with beta1 and beta2 swapped",
        k="beta",
    ),
    Mutant(
        "build-drops-adam-weight-decay",
        "pipeline/training/build.py",
        "o.epsilon, weight_decay=o.weight_decay)",
        "o.epsilon)",
        (KEYS + "::test_key_reaches_the_library_as_documented",),
        "optimizer.weight_decay never reaches Adam",
        k="weight_decay",
    ),
    Mutant(
        "build-cosine-ignores-final-fraction",
        "pipeline/training/build.py",
        "return schedules.CosineDecay(s.warmup_epochs, s.final_fraction)",
        "return schedules.CosineDecay(s.warmup_epochs)",
        (KEYS + "::test_key_reaches_the_library_as_documented",),
        "train.schedule.final_fraction never reaches CosineDecay",
        k="final_fraction",
    ),
    Mutant(
        "build-early-stopping-ignores-monitor",
        "pipeline/training/build.py",
        "return EarlyStopping(e.monitor, e.patience, e.min_delta, e.restore_best)",
        'return EarlyStopping("val_accuracy", e.patience, e.min_delta, e.restore_best)',
        (KEYS + "::test_key_reaches_the_library_as_documented",),
        "train.early_stopping.monitor never reaches EarlyStopping",
        k="monitor",
    ),
    Mutant(
        "fit-ignores-shuffle",
        "pipeline/training/frameworks.py",
        "shuffle=cfg.train.shuffle,",
        "shuffle=True,",
        (KEYS + "::test_key_reaches_the_library_as_documented",),
        "train.shuffle never reaches fit",
        k="shuffle",
    ),
    Mutant(
        "fit-options-swap-dropouts",
        "pipeline/training/build.py",
        '"dropout": m.dropout,\n        "input_dropout": m.input_dropout,',
        '"dropout": m.input_dropout,\n        "input_dropout": m.dropout,',
        (KEYS + "::test_key_reaches_the_library_as_documented",),
        "model.dropout and model.input_dropout swapped on the way to fit",
        k="dropout",
    ),
    # ------------------------------------------------------------------ config rules
    Mutant(
        "rule-momentum-optimizer-without-momentum",
        "pipeline/config.py",
        'if o.name == "momentum" and o.momentum == 0:',
        'if o.name == "momentum" and o.momentum < 0:',
        (RULES + "::test_the_rule_rejects_naming_the_key",),
        "the momentum optimiser accepted with momentum 0",
        k="momentum",
    ),
    Mutant(
        "rule-validation-size-all",
        "pipeline/config.py",
        "if not 0 <= d.validation_size < train_images:",
        "if not 0 <= d.validation_size <= train_images:",
        (RULES + "::test_the_rule_rejects_naming_the_key",),
        "a validation split of all 60,000 training images accepted",
        k="validation_size",
    ),
    Mutant(
        "rule-backoff-positive",
        "pipeline/config.py",
        '_check("data.backoff", rules.non_negative, d.backoff)',
        '_check("data.backoff", rules.positive, d.backoff)',
        (RULES + "::test_the_rule_accepts_its_boundary",),
        "a back-off of 0 refused",
        k="backoff",
    ),
    Mutant(
        "rule-blas-threads-dropped",
        "pipeline/config.py",
        'rules.positive_int("train.blas_threads", t.blas_threads)',
        "int(t.blas_threads)",
        (RULES + "::test_the_rule_rejects_naming_the_key",),
        "train.blas_threads = 0 accepted",
        k="blas_threads",
    ),
    Mutant(
        "rule-early-stopping-without-validation",
        "pipeline/config.py",
        "if t.early_stopping.enabled and d.validation_size == 0:",
        "if t.early_stopping.enabled and d.validation_size < 0:",
        (RULES + "::test_the_rule_rejects_naming_the_key",),
        "early stopping accepted with no validation split",
        k="early_stopping and enabled",
    ),
    Mutant(
        "rule-seed-negative",
        "pipeline/config.py",
        "if cfg.seed < 0:",
        "if cfg.seed < -1:",
        (RULES + "::test_the_rule_rejects_naming_the_key",),
        "seed -1 accepted",
        k="seed",
    ),
    # ------------------------------------------------------------------ the download
    Mutant(
        "backoff-not-doubling",
        "pipeline/data/fetch.py",
        "delay = backoff * 2 ** (attempt - 1)",
        "delay = backoff * attempt",
        (BOUNDARIES, "tests/test_download.py"),
        "the back-off grows linearly",
    ),
    Mutant(
        "retries-one-short",
        "pipeline/data/fetch.py",
        "attempts = max(1, int(retries))",
        "attempts = max(1, int(retries) - 1)",
        (BOUNDARIES, "tests/test_download.py"),
        "one attempt fewer than data.retries",
    ),
    # ------------------------------------------------------------------ sweep decisions
    Mutant(
        "best-on-test",
        "pipeline/reporting/sweep_summary.py",
        '            -_number(r["val_top1_accuracy"]),',
        '            -_number(r["test_top1_accuracy"]),',
        (DECISIONS, "tests/test_sweep.py::test_best_point_is_chosen_on_validation_accuracy"),
        "the best point ranked on test accuracy",
        k="best or rankings",
    ),
    Mutant(
        "best-tie-on-higher-loss",
        "pipeline/reporting/sweep_summary.py",
        "loss if math.isfinite(loss) else math.inf,",
        "-loss if math.isfinite(loss) else math.inf,",
        (DECISIONS,),
        "ties broken towards the higher validation cross-entropy",
        k="best or ties",
    ),
    Mutant(
        "best-may-be-failed",
        "pipeline/reporting/sweep_summary.py",
        'if r.get("status") == FINISHED and math.isfinite(_number(r.get("val_top1_accuracy")))',
        'if math.isfinite(_number(r.get("val_top1_accuracy")))',
        (DECISIONS,),
        "a failed point can be the best",
        k="best",
    ),
    Mutant(
        "summary-table-val-ce-is-test-ce",
        "pipeline/reporting/sweep_summary.py",
        '_fmt(entry["val_cross_entropy"]),',
        '_fmt(entry["test_cross_entropy"]),',
        (DECISIONS,),
        "summary.md's validation CE column shows the test CE",
        k="summary",
    ),
    Mutant(
        "best-json-wrong-key",
        "pipeline/reporting/sweep_summary.py",
        "            value = best.get(key)\n",
        '            value = best.get(key.replace("val_", "test_"))\n',
        (DECISIONS,),
        "best.json's validation numbers are the test numbers",
        k="summary",
    ),
    Mutant(
        "study-objective-on-test",
        "pipeline/reporting/study.py",
        'OBJECTIVE = "val_top1_accuracy"',
        'OBJECTIVE = "test_top1_accuracy"',
        (DECISIONS,),
        "the search history follows the test accuracy",
        k="search_history",
    ),
    Mutant(
        "champion-moves-on-a-tie",
        "pipeline/sweeps/parent.py",
        'better = float(new_tags["val_top1_accuracy"]) > float(old_tags["val_top1_accuracy"])',
        'better = float(new_tags["val_top1_accuracy"]) >= float(old_tags["val_top1_accuracy"])',
        (
            DECISIONS,
            "tests/test_sweep.py::test_champion_moves_only_to_a_better_model_on_the_same_"
            "validation_data",
        ),
        "the champion moves to an equally good model",
        k="champion",
    ),
    Mutant(
        "champion-on-test",
        "pipeline/sweeps/parent.py",
        'better = float(new_tags["val_top1_accuracy"]) > float(old_tags["val_top1_accuracy"])',
        'better = float(new_tags["test_top1_accuracy"]) > float(old_tags["test_top1_accuracy"])',
        (DECISIONS,),
        "the champion moves on test accuracy",
        k="champion",
    ),
    # ------------------------------------------------------------------ the comparison
    Mutant(
        "comparison-precision-recall-swapped",
        "pipeline/reporting/comparison.py",
        '"test_micro_precision": "precision",\n    "test_micro_recall": "recall",',
        '"test_micro_precision": "recall",\n    "test_micro_recall": "precision",',
        (DECISIONS, "tests/test_compare.py"),
        "precision and recall columns swapped",
        k="comparison or ratios or verdict",
    ),
    Mutant(
        "comparison-speedup-inverted",
        "pipeline/reporting/comparison.py",
        '"speedup_vs_tensorflow": tensorflow["train_seconds"] / seconds,',
        '"speedup_vs_tensorflow": seconds / tensorflow["train_seconds"],',
        (DECISIONS, "tests/test_compare.py"),
        "the speed-up over TensorFlow inverted",
        k="comparison or ratios",
    ),
    Mutant(
        "comparison-tf-row-from-params",
        "pipeline/reporting/comparison.py",
        'batch_size=tf_info.get("batch_size", t.batch_size),',
        "batch_size=t.batch_size,",
        (DECISIONS,),
        "TensorFlow's batch size taken from params.yaml, not from its run",
        k="comparison",
    ),
    Mutant(
        "comparison-match-tolerance-strict",
        "pipeline/reporting/comparison.py",
        "if abs(gain) <= MATCH_TOLERANCE:",
        "if abs(gain) < MATCH_TOLERANCE / 10:",
        ("tests/test_compare.py",),
        "'matches' only within a tenth of the tolerance",
    ),
)


def run_tests(copy: Path, tests: tuple[str, ...], k: str, timeout: float) -> tuple[str, float, str]:
    """``("killed" | "survived" | "timeout", seconds, last lines)`` of the tests in ``copy``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PYTHONPATH"] = str(copy)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    command = [sys.executable, "-m", "pytest", *tests, "-x", "-q", "-p", "no:cacheprovider"]
    command += ["-m", "not slow", "--no-header", *(["-k", k] if k else [])]
    started = time.monotonic()
    try:
        result = subprocess.run(
            command, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return "timeout", time.monotonic() - started, ""
    seconds = time.monotonic() - started
    tail = "\n".join(result.stdout.strip().splitlines()[-3:])
    if result.returncode == 0:
        return "survived", seconds, tail
    if result.returncode in (2, 3, 4, 5):  # interrupted, internal, usage error, no tests
        raise SystemExit(f"pytest could not run {tests}:\n{result.stdout[-3000:]}")
    return "killed", seconds, tail


def check_mutant(copy: Path, mutant: Mutant) -> str:
    """Apply ``mutant`` to ``copy``; returns the original text to restore."""
    path = copy / mutant.path
    text = path.read_text()
    count = text.count(mutant.old)
    if count != 1:
        raise SystemExit(f"{mutant.id}: the snippet occurs {count} times in {mutant.path}")
    mutated = text.replace(mutant.old, mutant.new)
    compile(mutated, str(path), "exec")  # a mutant must be valid Python
    path.write_text(mutated)
    return text


def report(results: list[tuple[Mutant, str, float, str]]) -> str:
    killed = sum(status == "killed" for _, status, _, _ in results)
    lines = [
        f"Mutation score: {killed}/{len(results)} killed ({killed / len(results):.0%}).",
        "",
        "| mutant | file | bug | result | seconds |",
        "|---|---|---|---|--:|",
    ]
    for mutant, status, seconds, _ in results:
        lines.append(
            f"| `{mutant.id}` | `{mutant.path}` | {mutant.what} | {status} | {seconds:.0f} |"
        )
    survivors = [(m, s) for m, s, _, _ in results if s != "killed"]
    if survivors:
        lines += ["", "Survivors:", ""]
        for mutant, status in survivors:
            why = mutant.equivalent or "NOT EXPLAINED: a hole in the tests"
            lines.append(f"- `{mutant.id}` ({status}): {why}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python tests/mutants.py",
        description="Plant one bug at a time (the mutants of this file) and run the tests "
        "that guard that code; report which bugs the tests catch.",
    )
    parser.add_argument("ids", nargs="*", help="mutants to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--out", type=Path, help="also write the report (Markdown) here")
    parser.add_argument(
        "--timeout", type=float, default=900, help="seconds per mutant (%(default)s)"
    )
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.ids or m.id in args.ids]
    unknown = set(args.ids) - {m.id for m in MUTANTS}
    if unknown:
        parser.error(f"unknown mutants: {', '.join(sorted(unknown))} (see --list)")
    if args.list:
        for m in chosen:
            print(f"{m.id:45} {m.path:40} {m.what}")
        return 0
    results = []
    with tempfile.TemporaryDirectory(prefix="mutants-") as tmp:
        copy = copy_working_tree(Path(tmp))
        for i, mutant in enumerate(chosen, 1):
            original = check_mutant(copy, mutant)
            try:
                status, seconds, tail = run_tests(copy, mutant.tests, mutant.k, args.timeout)
            finally:
                (copy / mutant.path).write_text(original)
            results.append((mutant, status, seconds, tail))
            print(f"[{i}/{len(chosen)}] {mutant.id}: {status} ({seconds:.0f} s)", flush=True)
    text = report(results)
    print("\n" + text)
    if args.out:
        args.out.write_text(text)
    holes = [m for m, status, _, _ in results if status != "killed" and not m.equivalent]
    return 1 if holes else 0


if __name__ == "__main__":
    raise SystemExit(main())
