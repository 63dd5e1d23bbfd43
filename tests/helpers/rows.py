"""Rows of a sweep summary (what each point's ``result.json`` holds), for the summary tests."""

from __future__ import annotations

from typing import Any

SIZES = {"reference": [784, 32, 16, 10], "wide": [784, 128, 64, 10]}


def summary_row(
    job: int,
    model: str = "reference",
    lr: float = 0.1,
    status: str = "FINISHED",
    *,
    extra_overrides: tuple[str, ...] = (),
    **fields: Any,
) -> dict[str, Any]:
    """The row of point ``job`` (``model`` at learning rate ``lr``); ``fields`` set its scores
    and anything else (none by default: a row without numbers)."""
    return {
        "job": job,
        "overrides": [f"model={model}", f"optimizer.learning_rate={lr}", *extra_overrides],
        "model": model,
        "layer_sizes": SIZES[model],
        "hidden_activation": "tanh",
        "optimizer": "sgd",
        "learning_rate": lr,
        "status": status,
        "val_top1_accuracy": None,
        "val_cross_entropy": None,
        "test_top1_accuracy": None,
        "test_cross_entropy": None,
        "train_seconds": 1.0,
        "reason": None if status == "FINISHED" else "DivergenceError: training diverged",
        "config": {"model": {"name": model}},
        **fields,
    }
