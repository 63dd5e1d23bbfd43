"""Bad input stops with a ValueError that says what is wrong; save/load round-trips exactly."""

from __future__ import annotations

import json
import os
import re
import stat

import numpy as np
import pytest

from mlp import MLP, SGD, ModelFileError, ParameterError
from mlp.activations import ACTIVATIONS
from mlp.initializers import INITIALIZERS
from mlp.losses import LOSSES


def _data(n: int = 6, n_features: int = 3, n_classes: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, n_features)), rng.integers(0, n_classes, n)


# ------------------------------------------------------------------------------- construction
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"activations": ["swish", "softmax"]}, r"^activations must be one of tanh, .*'swish'$"),
        ({"activations": [None, "softmax"]}, r"^activations must be one of .*, got None$"),
        ({"loss": "mse"}, r"^loss must be one of cross_entropy, sse, got 'mse'$"),
        ({"init": "orthogonal"}, r"^init must be one of xavier_uniform, .*, got 'orthogonal'$"),
        ({"activations": ["softmax", "softmax"]}, r"'softmax' is for the output layer only"),
        ({"activations": ["tanh"]}, r"need 2 activations, got 1"),
        ({"activations": ["tanh", "tanh", "softmax"]}, r"need 2 activations, got 3"),
        ({"activations": "tanh"}, r"one name per layer"),
        ({"dtype": "float16"}, r"dtype must be one of float32, float64"),
        ({"dtype": "int32"}, r"dtype must be one of float32, float64"),
    ],
)
def test_bad_configuration_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MLP([3, 4, 2], **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "name", "value", "choices"),
    [
        ({"activations": ["tanh", "swish"]}, "activations", "swish", ACTIVATIONS),
        ({"loss": "mse"}, "loss", "mse", LOSSES),
        ({"init": "orthogonal"}, "init", "orthogonal", INITIALIZERS),
        ({"dtype": "float16"}, "dtype", "float16", ("float32", "float64")),
        ({"dtype": np.int32}, "dtype", "int32", ("float32", "float64")),
        ({"dtype": "bogus"}, "dtype", "bogus", ("float32", "float64")),
    ],
)
def test_unknown_names_raise_a_parameter_error_that_lists_the_choices(kwargs, name, value, choices):
    with pytest.raises(ParameterError) as info:
        MLP([3, 4, 2], **kwargs)
    assert (info.value.name, info.value.value) == (name, value)
    assert info.value.rule == f"must be one of {', '.join(choices)}"


@pytest.mark.parametrize("output", ["tanh", "sigmoid", "relu", "linear"])
def test_cross_entropy_needs_a_softmax_output(output):
    with pytest.raises(ValueError, match=r"'cross_entropy' needs a 'softmax' output"):
        MLP([3, 4, 2], ["tanh", output], loss="cross_entropy")
    MLP([3, 4, 2], ["tanh", output], loss="sse")  # fine with sse


@pytest.mark.parametrize(
    "sizes",
    [[], [3], [3, 0, 2], [3, 4, 0], [0, 2], [3, -1, 2], [3, 2.5, 2], [3, True, 2], [3, "4", 2]],
    ids=repr,
)
def test_bad_layer_sizes_raise(sizes):
    with pytest.raises(ParameterError, match=r"^layer_sizes (needs|must)") as info:
        MLP(sizes)
    assert (info.value.name, info.value.value) == ("layer_sizes", sizes)


# ------------------------------------------------------------------------------- inputs
@pytest.fixture
def net():
    return MLP([3, 4, 2], seed=0, dtype="float64")


def _calls(net, X, y):
    """Every public entry point that takes inputs."""
    return {
        "forward": lambda: net.forward(X),
        "predict": lambda: net.predict(X),
        "loss": lambda: net.loss(X, y),
        "gradients": lambda: net.gradients(X, y),
        "fit": lambda: net.fit(X, y, epochs=1, batch_size=2),
    }


ENTRY_POINTS = ["forward", "predict", "loss", "gradients", "fit"]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_wrong_number_of_features_raises(net, entry):
    X, y = _data(n_features=4)
    with pytest.raises(ValueError, match=r"X has 4 features .* input layer has 3 units"):
        _calls(net, X, y)[entry]()


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_one_dimensional_X_raises(net, entry):
    with pytest.raises(ValueError, match=r"X must be 2-D"):
        _calls(net, np.zeros(3), np.array([0]))[entry]()


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_empty_X_raises(net, entry):
    with pytest.raises(ValueError, match=r"X is empty"):
        _calls(net, np.zeros((0, 3)), np.zeros(0, dtype=int))[entry]()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_non_finite_X_raises(net, entry, bad):
    X, y = _data()
    X[2, 1] = bad
    with pytest.raises(ValueError, match=r"X contains 1 NaN or infinite values"):
        _calls(net, X, y)[entry]()


def test_non_numeric_X_raises(net):
    with pytest.raises(ValueError, match="real numbers"):
        net.forward(np.array([["a", "b", "c"]]))


@pytest.mark.parametrize("labels", [[0, 1, -1, 0, 1, 0], [0, 1, 2, 0, 1, 0]], ids=["neg", "big"])
@pytest.mark.parametrize("entry", ["loss", "gradients", "fit"])
def test_labels_outside_the_classes_raise(net, entry, labels):
    X, _ = _data()
    with pytest.raises(ValueError, match=r"labels in \[-?\d, \d\] but must be in \[0, 2\)"):
        _calls(net, X, np.array(labels))[entry]()


@pytest.mark.parametrize("entry", ["loss", "gradients", "fit"])
def test_y_length_mismatch_raises(net, entry):
    X, y = _data()
    with pytest.raises(ValueError, match=r"y has 5 rows but X has 6"):
        _calls(net, X, y[:5])[entry]()
    with pytest.raises(ValueError, match=r"y has 7 rows but X has 6"):
        _calls(net, X, np.eye(2)[np.r_[y, 0]])[entry]()


def test_other_bad_targets_raise(net):
    X, y = _data()
    with pytest.raises(ValueError, match=r"integer class labels"):
        net.loss(X, y + 0.5)
    with pytest.raises(ValueError, match=r"3 columns but the output layer has 2 units"):
        net.loss(X, np.eye(3)[y])
    with pytest.raises(ValueError, match=r"y contains NaN or infinite values"):
        net.loss(X, np.full((6, 2), np.nan))
    with pytest.raises(ValueError, match=r"must be labels \(n,\) or targets"):
        net.loss(X, np.zeros((6, 2, 1)))
    # Integral floats are accepted as labels.
    assert net.loss(X, y.astype(float)) == net.loss(X, y)


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True, None])
def test_bad_batch_size_raises(net, batch_size):
    X, y = _data()
    with pytest.raises(ParameterError, match="batch_size must be an integer >= 1") as info:
        net.fit(X, y, batch_size=batch_size)
    assert (info.value.name, info.value.value) == ("batch_size", batch_size)


@pytest.mark.parametrize("epochs", [0, -3, 1.0, False])
def test_bad_epochs_raise(net, epochs):
    X, y = _data()
    with pytest.raises(ParameterError, match="epochs must be an integer >= 1") as info:
        net.fit(X, y, epochs=epochs)
    assert (info.value.name, info.value.value) == ("epochs", epochs)


def test_numpy_integers_are_accepted_for_epochs_and_batch_size(net):
    X, y = _data()
    history = net.fit(X, y, epochs=np.int64(2), batch_size=np.int32(4))
    assert history["epoch"] == [1, 2]


def test_bad_validation_data_raises(net):
    X, y = _data()
    X_val, y_val = _data(4, seed=1)
    with pytest.raises(ValueError, match=r"X_val has 2 features"):
        net.fit(X, y, validation=(X_val[:, :2], y_val))
    with pytest.raises(ValueError, match=r"y_val has 3 rows"):
        net.fit(X, y, validation=(X_val, y_val[:3]))
    with pytest.raises(ValueError, match=r"y_val has labels in \[0, 7\]"):
        net.fit(X, y, validation=(X_val, np.r_[y_val[:-1], 7]))
    X_val[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"X_val contains 1 NaN"):
        net.fit(X, y, validation=(X_val, y_val))


def test_validation_length_mismatch_names_X_val(net):
    """Regression: the message once said 'X has 4' (X has 6 rows; X_val has 4)."""
    X, y = _data()
    X_val, y_val = _data(4, seed=1)
    with pytest.raises(ValueError, match=r"y_val has 3 rows but X_val has 4"):
        net.fit(X, y, validation=(X_val, y_val[:3]))


def test_nothing_is_trained_when_the_input_is_rejected(net):
    X, y = _data()
    before = [W.copy() for W in net.weights]
    with pytest.raises(ValueError):
        net.fit(X, np.r_[y[:-1], 5], epochs=2, batch_size=2, optimizer=SGD(1.0))
    for W, W0 in zip(net.weights, before, strict=True):
        np.testing.assert_array_equal(W, W0)


# ------------------------------------------------------------------------------- save / load
def _trained(dtype: str) -> tuple[MLP, np.ndarray]:
    """A network whose parameters are no longer the ones its seed draws."""
    X, y = _data(40, n_features=5, n_classes=3, seed=2)
    net = MLP([5, 7, 4, 3], ["tanh", "relu", "softmax"], seed=3, dtype=dtype)
    net.fit(X, y, epochs=3, batch_size=8, optimizer=SGD(0.5, momentum=0.9))
    rng = np.random.default_rng(4)
    for b in net.biases:
        b += rng.normal(0.0, 0.1, b.shape).astype(dtype)
    fresh = MLP([5, 7, 4, 3], ["tanh", "relu", "softmax"], seed=3, dtype=dtype)
    assert not np.array_equal(net.weights[0], fresh.weights[0])
    return net, X


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_save_load_round_trip_is_exact(tmp_path, dtype):
    net, X = _trained(dtype)
    path = net.save(tmp_path / "model.npz")
    assert path == tmp_path / "model.npz"
    loaded = MLP.load(path)
    assert loaded.config() == net.config()
    assert loaded.dtype == np.dtype(dtype)
    for p, q in zip((*loaded.weights, *loaded.biases), (*net.weights, *net.biases), strict=True):
        assert p.dtype == q.dtype
        assert np.array_equal(p, q)
    assert np.array_equal(loaded.forward(X), net.forward(X))
    assert np.array_equal(loaded.predict(X), net.predict(X))


def test_saved_file_is_plain_named_arrays(tmp_path):
    net, _ = _trained("float32")
    path = net.save(tmp_path / "sub" / "dir" / "model.npz")  # parents are created
    with np.load(path, allow_pickle=False) as data:
        assert set(data.files) == {"W0", "b0", "W1", "b1", "W2", "b2", "config"}
        for i in range(3):
            assert np.array_equal(data[f"W{i}"], net.weights[i])
            assert np.array_equal(data[f"b{i}"], net.biases[i])
            assert data[f"W{i}"].dtype == np.float32
        config = json.loads(str(data["config"]))
    assert config["layer_sizes"] == [5, 7, 4, 3]
    assert config["activations"] == ["tanh", "relu", "softmax"]
    assert config["loss"] == "cross_entropy"
    assert config["dtype"] == "float32"
    # Written atomically: no temporary file is left next to it.
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.npz"]


def _rewrite(path, out, drop=(), replace=None):
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files if k not in drop}
    arrays.update(replace or {})
    np.savez(out, **arrays)
    return out


@pytest.mark.parametrize("missing", ["W1", "b2", "W0"])
def test_load_with_a_missing_array_raises(tmp_path, missing):
    net, _ = _trained("float64")
    path = net.save(tmp_path / "model.npz")
    broken = _rewrite(path, tmp_path / "broken.npz", drop=[missing])
    with pytest.raises(ValueError, match=rf"lacks the array '{missing}'"):
        MLP.load(broken)


@pytest.mark.parametrize(
    ("name", "shape"), [("W0", (7, 5)), ("W1", (7, 5)), ("b1", (5,)), ("b0", (7, 1))]
)
def test_load_with_a_wrong_shape_raises(tmp_path, name, shape):
    net, _ = _trained("float64")
    path = net.save(tmp_path / "model.npz")
    broken = _rewrite(path, tmp_path / "broken.npz", replace={name: np.zeros(shape)})
    with pytest.raises(ValueError, match=rf"{name} has shape"):
        MLP.load(broken)


def test_load_without_config_raises(tmp_path):
    net, _ = _trained("float64")
    path = net.save(tmp_path / "model.npz")
    broken = _rewrite(path, tmp_path / "broken.npz", drop=["config"])
    with pytest.raises(ValueError, match="no 'config'"):
        MLP.load(broken)


def test_load_refuses_pickled_objects(tmp_path):
    net, _ = _trained("float64")
    path = net.save(tmp_path / "model.npz")
    objects = np.empty(net.weights[0].shape, dtype=object)
    objects[...] = 0.0
    broken = _rewrite(path, tmp_path / "broken.npz", replace={"W0": objects})
    with pytest.raises(ValueError, match="allow_pickle"):
        MLP.load(broken)


def test_load_with_an_unknown_config_key_raises_value_error(tmp_path):
    """Regression: a config key load does not know (say, from a newer version) once reached
    MLP(**config) and raised TypeError."""
    net, _ = _trained("float64")
    path = net.save(tmp_path / "model.npz")
    with np.load(path, allow_pickle=False) as data:
        config = json.loads(str(data["config"]))
    config["dropout"] = 0.5
    broken = _rewrite(
        path, tmp_path / "broken.npz", replace={"config": np.array(json.dumps(config))}
    )
    with pytest.raises(ValueError, match="dropout"):
        MLP.load(broken)


def test_saved_file_has_ordinary_permissions(tmp_path):
    """The temporary file behind the atomic write is private (mkstemp); the model must not be."""
    net, _ = _trained("float32")
    umask = os.umask(0)
    os.umask(umask)
    path = net.save(tmp_path / "model.npz")
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_dtype_accepts_numpy_dtypes_and_refuses_other_precisions():
    assert MLP([3, 2], ["softmax"], dtype=np.float64).dtype == np.float64
    with pytest.raises(ValueError, match="dtype must be one of"):
        MLP([3, 2], ["softmax"], dtype=np.float16)


def test_load_refuses_another_format_version(tmp_path):
    path = MLP([3, 2], ["softmax"]).save(tmp_path / "m.npz")
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays["config"]))
    meta["format_version"] = 99
    arrays["config"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "future.npz", **arrays)
    with pytest.raises(ValueError, match="format version 99"):
        MLP.load(tmp_path / "future.npz")


# ------------------------------------------------------------------------------- damaged files
def _saved(tmp_path) -> tuple[MLP, bytes]:
    net, _ = _trained("float32")
    path = net.save(tmp_path / "model.npz")
    return net, path.read_bytes()


def _refused(path, match: str = "") -> ModelFileError:
    with pytest.raises(ModelFileError) as info:
        MLP.load(path)
    error = info.value
    assert isinstance(error, ValueError)
    assert error.path == str(path) and str(error).startswith(f"{path}: ")
    assert "\n" not in str(error)
    if match:
        assert re.search(match, error.reason), error.reason
    return error


@pytest.mark.parametrize("fraction", [0.0, 0.001, 0.01, 0.1, 0.5, 0.9, 0.999])
def test_a_truncated_file_is_refused_naming_it(tmp_path, fraction):
    _, raw = _saved(tmp_path)
    path = tmp_path / "truncated.npz"
    path.write_bytes(raw[: int(len(raw) * fraction)])
    _refused(path, "cannot be read as a saved MLP")


@pytest.mark.parametrize("seed", range(5))
def test_random_bytes_are_refused_naming_the_file(tmp_path, seed):
    path = tmp_path / "random.npz"
    path.write_bytes(np.random.default_rng(seed).bytes(2000 + 500 * seed))
    _refused(path)


def test_every_single_bit_flip_loads_the_same_network_or_is_refused(tmp_path):
    """A bit flipped anywhere in the file: either the exact network (a flip in a byte nobody
    reads), or ModelFileError naming the file; never another exception, never other weights."""
    net, raw = _saved(tmp_path)
    path = tmp_path / "flipped.npz"
    rng = np.random.default_rng(7)
    positions = sorted(set(rng.integers(0, len(raw), 400).tolist()) | {0, 30, len(raw) - 1})
    outcomes = {"same": 0, "refused": 0}
    for position in positions:
        flipped = bytearray(raw)
        flipped[position] ^= 1 << int(rng.integers(0, 8))
        path.write_bytes(bytes(flipped))
        try:
            loaded = MLP.load(path)
        except ModelFileError as exc:
            assert exc.path == str(path)
            outcomes["refused"] += 1
            continue
        assert loaded.config() == net.config()
        for p, q in zip(
            (*loaded.weights, *loaded.biases), (*net.weights, *net.biases), strict=True
        ):
            assert np.array_equal(p, q), f"flip at byte {position} changed the weights silently"
        outcomes["same"] += 1
    assert outcomes["refused"] > len(positions) // 2


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("name", ["W0", "b2"])
def test_non_finite_weights_are_refused(tmp_path, name, bad):
    net, _ = _trained("float32")
    path = net.save(tmp_path / "model.npz")
    with np.load(path, allow_pickle=False) as data:
        array = data[name].copy()
    array.flat[0] = bad
    broken = _rewrite(path, tmp_path / "broken.npz", replace={name: array})
    _refused(broken, rf"^{name} holds 1 non-finite value")


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ("not json", "JSONDecodeError"),
        ("[1, 2]", "its config is a list"),
        ('{"format_version": 1, "layer_sizes": "abc"}', "its config is invalid"),
        ('{"format_version": 1, "layer_sizes": [5, 7, 4, 3], "seed": "x"}', "invalid"),
        ('{"format_version": 1, "layer_sizes": [5, 7, 4, 3], "weights": 1}', "does not know"),
    ],
)
def test_a_damaged_config_is_refused(tmp_path, config, match):
    net, _ = _trained("float32")
    path = net.save(tmp_path / "model.npz")
    broken = _rewrite(path, tmp_path / "broken.npz", replace={"config": np.array(config)})
    _refused(broken, match)


def test_arrays_of_another_dtype_or_a_single_array_are_refused(tmp_path):
    net, _ = _trained("float32")
    path = net.save(tmp_path / "model.npz")
    with np.load(path, allow_pickle=False) as data:
        W0 = data["W0"]
    broken = _rewrite(path, tmp_path / "broken.npz", replace={"W0": W0.astype(np.float64)})
    _refused(broken, "W0 holds float64, the config says float32")
    np.save(tmp_path / "single.npy", W0)
    _refused(tmp_path / "single.npy", "single .npy array")
    (tmp_path / "empty.npz").write_bytes(b"")
    _refused(tmp_path / "empty.npz")


def test_a_missing_model_file_stays_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        MLP.load(tmp_path / "absent.npz")
