"""Every malformed input gives one ``error:`` line naming the file (or key) and exit code 2,
before any work: params files, values that pass the schema's types, overrides of
``pipeline.params``, a damaged preprocessed split, a damaged model file."""

from __future__ import annotations

import re

import numpy as np
import pytest
import yaml

from mlp import MLP
from pipeline import evaluate, train
from pipeline import params as params_command
from pipeline.config import ConfigError, load_params
from pipeline.errors import InputError

from helpers.project import runs_of, write_params

PARAMS_TEXT = (
    __import__("pathlib").Path(__file__).resolve().parents[1] / "params.yaml"
).read_text()


def _nothing_started(project) -> None:
    """No output, no MLflow run: the command stopped before any work."""
    assert not (project / "models").exists()
    assert not (project / "reports").exists()
    assert runs_of(f"sqlite:///{project / 'mlflow.db'}") == []


def _one_error_line(err: str, *needles: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, err
    assert "Traceback" not in err, err
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def _replace(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


# A params file broken in each way a hand edit, a bad merge or a truncated write breaks one, and
# what its one error line says.
BROKEN_PARAMS = {
    "yaml syntax": (lambda t: _replace(t, "train:\n", "train: {\n"), "is not valid YAML at line"),
    "tab indentation": (lambda t: _replace(t, "  epochs:", "\tepochs:"), "is not valid YAML"),
    "duplicate key": (
        lambda t: _replace(t, "  epochs: 5\n", "  epochs: 5\n  epochs: 50\n"),
        "the key 'epochs' is given twice",
    ),
    "duplicate section": (lambda t: t + "seed: 3\n", "the key 'seed' is given twice"),
    "interpolation": (
        lambda t: _replace(t, "  epochs: 5\n", "  epochs: ${train.nope}\n"),
        "train.epochs",
    ),
    "interpolation to a missing section": (
        lambda t: _replace(t, "seed: 0\n", "seed: ${nowhere.seed}\n"),
        "seed",
    ),
    "a list at the top": (lambda t: "- seed: 0\n- train: {}\n", "holds a list, not a mapping"),
    "a scalar at the top": (lambda t: "just a line\n", "holds a str, not a mapping"),
    "empty": (lambda t: "", "is empty"),
    "only comments": (lambda t: "# nothing here\n", "is empty"),
    "missing section": (
        lambda t: t.split("model:\n")[0] + "optimizer:\n" + t.split("optimizer:\n")[1],
        "lacks the section(s) model",
    ),
    "unknown section": (lambda t: t + "trian:\n  epochs: 3\n", "unknown section(s) trian"),
    "not utf-8": (lambda t: t + "# \udcff\n", "is not UTF-8 text"),
    "a directory": (None, "cannot read"),
}


@pytest.mark.parametrize("case", list(BROKEN_PARAMS))
def test_a_broken_params_file_is_one_error_line_naming_it_before_any_work(project, capsys, case):
    breaker, message = BROKEN_PARAMS[case]
    path = project / "params.yaml"
    if breaker is None:
        path.mkdir()
    else:
        path.write_bytes(breaker(PARAMS_TEXT).encode("utf-8", "surrogateescape"))
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_params(path)
    assert train.main(["--params", str(path)]) == 2
    _one_error_line(capsys.readouterr().err, str(path), message)
    _nothing_started(project)


def test_the_committed_params_file_loads_and_a_missing_section_never_falls_back(project):
    (project / "params.yaml").write_text(PARAMS_TEXT)
    assert load_params(project / "params.yaml").train.epochs == 5
    # A file with only the key one cares about is refused, not completed with the defaults.
    (project / "params.yaml").write_text("train:\n  epochs: 1\n")
    with pytest.raises(ConfigError, match=r"lacks the section\(s\) seed, data, model"):
        load_params(project / "params.yaml")


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        # Fields of options that are not in use (SGD has no epsilon, no schedule, no early
        # stopping by default) are checked as well: nothing non-finite gets into a run.
        ("  nesterov: false\n", "  nesterov: false\n  epsilon: .inf\n", "optimizer.epsilon = inf"),
        ("  weight_decay: 0.0\n", "  weight_decay: .nan\n", "optimizer.weight_decay = nan"),
        ("  nesterov: false\n", "  nesterov: false\n  beta2: .nan\n", "optimizer.beta2 = nan"),
        ("    gamma: 0.5\n", "    gamma: .nan\n", "train.schedule.gamma = nan"),
        ("    min_delta: 0.0\n", "    min_delta: -.inf\n", "train.early_stopping.min_delta"),
        ("  experiment: mnist-mlp\n", "  experiment: ''\n", "tracking.experiment = ''"),
        ("  experiment: mnist-mlp\n", "  experiment: '   '\n", "tracking.experiment"),
    ],
)
def test_values_that_pass_the_types_but_fail_later_are_refused_before_any_run(
    project, capsys, old, new, key
):
    path = project / "params.yaml"
    path.write_text(_replace(PARAMS_TEXT, old, new))
    assert train.main(["--params", str(path)]) == 2
    _one_error_line(capsys.readouterr().err, key, str(path))
    _nothing_started(project)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("nosuch=1", "invalid override: Could not override 'nosuch'"),
        ("model=nosuch", "Could not find 'model/nosuch' (options: reference,"),
        ("experiment=nope", "Could not find 'experiment/nope' (options: best)"),
        ("train.epochs=[1", "invalid override"),
        ("train.epochs=", "train.epochs"),
        ("train.epochs=0", "train.epochs = 0"),
        ("optimizer.learning_rate=nan", "optimizer.learning_rate = nan"),
    ],
)
def test_params_with_a_bad_override_is_one_line_and_leaves_the_file_alone(
    tmp_path, capsys, override, message
):
    out = tmp_path / "params.yaml"
    out.write_text(PARAMS_TEXT)
    assert params_command.main([override, "--out", str(out)]) == 2
    _one_error_line(capsys.readouterr().err, message)
    assert out.read_text() == PARAMS_TEXT  # not replaced by an invalid composition
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # no temporary file


def test_params_writes_a_valid_composition(tmp_path):
    out = tmp_path / "sub" / "params.yaml"
    assert params_command.main(["train.epochs=3", "--out", str(out)]) == 0
    assert load_params(out).train.epochs == 3
    assert yaml.safe_load(out.read_text())["train"]["epochs"] == 3


# ------------------------------------------------------------------------------- damaged data
def _damage(path, how: str) -> None:
    raw = path.read_bytes()
    if how == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif how == "random bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "bit flip":
        flipped = bytearray(raw)
        flipped[len(raw) // 3] ^= 0x10
        path.write_bytes(bytes(flipped))
    else:
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
        if how == "missing array":
            del arrays["y_val"]
        elif how == "nan pixels":
            arrays["X_train"][3, 5] = np.nan
        elif how == "labels out of range":
            arrays["y_test"][0] = 10
        elif how == "wrong width":
            arrays["X_val"] = arrays["X_val"][:, :100]
        np.savez(path, **arrays)


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("truncated", "cannot be read as a preprocessed split"),
        ("random bytes", "cannot be read as a preprocessed split"),
        ("empty", "cannot be read as a preprocessed split"),
        ("bit flip", "cannot be read as a preprocessed split"),
        ("missing array", "lacks the array(s) y_val"),
        ("nan pixels", "X_train holds non-finite pixels"),
        ("labels out of range", "y_test has labels outside [0, 10)"),
        ("wrong width", "X_val is float32 of shape (100, 100)"),
    ],
)
def test_train_on_a_damaged_split_is_one_line_naming_it_before_any_run(
    project, capsys, how, message
):
    params = write_params(project)
    data = project / "data/processed/mnist.npz"
    _damage(data, how)
    assert train.main(["--params", str(params), "--data", str(data)]) == 2
    line = _one_error_line(capsys.readouterr().err, str(data), message)
    assert line.endswith("rerun `dvc repro preprocess`")
    _nothing_started(project)


@pytest.mark.parametrize("how", ["truncated", "random bytes", "nan weights"])
def test_evaluate_on_a_damaged_model_is_one_line_naming_it(project, capsys, how):
    params = write_params(project)
    model = project / "models/model.npz"
    MLP([784, 8, 10], seed=0).save(model)
    if how == "nan weights":
        with np.load(model) as data:
            arrays = {k: data[k] for k in data.files}
        arrays["W1"][0, 0] = np.nan
        np.savez(model, **arrays)
    else:
        _damage(model, how)
    assert evaluate.main(["--params", str(params), "--model", str(model)]) == 2
    line = _one_error_line(capsys.readouterr().err, f"error: {model}: ")
    assert line.endswith("rerun `dvc repro train`")
    assert not (project / "reports").exists()


def test_a_damaged_split_is_an_input_error(project):
    from pipeline.data.dataset import load_dataset

    data = project / "data/processed/mnist.npz"
    _damage(data, "truncated")
    with pytest.raises(InputError) as info:
        load_dataset(data)
    assert isinstance(info.value, ValueError)


def test_a_folder_given_as_the_split_or_the_model_is_one_line(project, capsys):
    params = write_params(project)
    folder = project / "a-folder"
    folder.mkdir()
    assert train.main(["--params", str(params), "--data", str(folder)]) == 2
    _one_error_line(capsys.readouterr().err, f"{folder} cannot be read: Is a directory")
    assert evaluate.main(["--params", str(params), "--model", str(folder)]) == 2
    _one_error_line(capsys.readouterr().err, f"{folder} cannot be read: Is a directory")
    _nothing_started(project)
