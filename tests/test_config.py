"""The Hydra config tree, its schema, and params.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from pipeline.config import ConfigError, compose, load_params, to_dict, validate
from pipeline.params import write_params
from pipeline.training.build import build_model, build_optimizer, fit_options

ROOT = Path(__file__).resolve().parents[1]


def test_committed_params_yaml_is_the_composed_defaults(tmp_path):
    committed = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert committed == OmegaConf.to_container(compose(), resolve=True)
    # and byte for byte what DVC's Hydra integration writes
    fresh = write_params(tmp_path / "params.yaml")
    assert fresh.read_text() == (ROOT / "params.yaml").read_text()


def test_defaults_are_the_reference_configuration():
    cfg = validate(compose())
    assert cfg.model.hidden_sizes == [32, 16]
    assert cfg.model.hidden_activation == "tanh"
    assert (cfg.model.output_activation, cfg.model.loss) == ("softmax", "cross_entropy")
    assert (cfg.optimizer.name, cfg.optimizer.learning_rate) == ("sgd", 0.1)
    assert (cfg.train.epochs, cfg.train.batch_size) == (5, 32)
    net = build_model(cfg)
    assert net.layer_sizes == [784, 32, 16, 10]
    assert net.activations == ["tanh", "tanh", "softmax"]


@pytest.mark.parametrize(
    ("overrides", "name", "extra"),
    [
        (["optimizer=momentum"], "sgd", {"momentum": 0.9}),
        (["optimizer=adam"], "adam", {"beta1": 0.9}),
        (["optimizer=sgd"], "sgd", {"momentum": 0.0}),
    ],
)
def test_optimizer_group_builds_the_optimizer(overrides, name, extra):
    opt = build_optimizer(validate(compose(overrides)))
    config = opt.config()
    assert config["name"] == name
    for key, value in extra.items():
        assert config[key] == value


def test_overrides_reach_the_model():
    cfg = validate(
        compose(["model.hidden_sizes=[64,32,16]", "model.hidden_activation=relu", "seed=3"])
    )
    net = build_model(cfg)
    assert net.layer_sizes == [784, 64, 32, 16, 10]
    assert net.activations == ["relu", "relu", "relu", "softmax"]
    assert net.seed == 3


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer.learning_rate=-0.1", r"optimizer\.learning_rate = -0\.1: must be .*> 0"),
        ("optimizer.learning_rate=0", r"optimizer\.learning_rate = 0\.0"),
        ("model.hidden_sizes=[]", r"model\.hidden_sizes = \[\]: needs at least one"),
        ("model.hidden_sizes=[32,0]", r"model\.hidden_sizes = \[32, 0\]: every size must be"),
        ("model.hidden_activation=swish", r"model\.hidden_activation = 'swish': must be one of"),
        ("model.hidden_activation=softmax", r"model\.hidden_activation = 'softmax'"),
        ("model.loss=hinge", r"model\.loss = 'hinge': must be one of"),
        ("model.init=zeros", r"model\.init = 'zeros': must be one of"),
        ("model.output_activation=sigmoid", r"cross_entropy.*needs a 'softmax' output"),
        ("train.epochs=0", r"train\.epochs = 0: must be an integer >= 1"),
        ("train.epochs=abc", r"train\.epochs: .*'abc'.*Integer"),
        ("train.batch_size=0", r"train\.batch_size = 0"),
        ("train.dtype=float16", r"train\.dtype = 'float16': must be one of"),
        ("train.blas_threads=0", r"train\.blas_threads = 0: must be auto .*, an integer >= 1"),
        ("train.blas_threads=many", r"train\.blas_threads = 'many': must be auto"),
        ("train.blas_threads=1.5", r"train\.blas_threads = 1\.5: must be auto"),
        ("train.blas_threads=true", r"train\.blas_threads = True: must be auto"),
        ("optimizer.momentum=1.5", r"optimizer\.momentum = 1\.5: must be in \[0, 1\)"),
        ("data.validation_size=60000", r"data\.validation_size = 60000"),
        ("data.train_limit=0", r"data\.train_limit = 0"),
        ("seed=-1", r"seed = -1"),
        ("+train.epoch=3", r"train\.epoch: Key 'epoch' not in"),
        ("model.dropout=1.0", r"model\.dropout = 1\.0: must be in \[0, 1\)"),
        ("model.input_dropout=-0.1", r"model\.input_dropout = -0\.1: must be in \[0, 1\)"),
        ("train.max_norm=0", r"train\.max_norm = 0\.0: must be a finite number > 0"),
        ("train.schedule.name=linear", r"train\.schedule\.name = 'linear': must be one of none"),
        (
            "train.schedule.name=step train.schedule.gamma=1.5",
            r"train\.schedule\.gamma = 1\.5: must be in \(0, 1\)",
        ),
        (
            "train.schedule.name=step train.schedule.step_size=0",
            r"train\.schedule\.step_size = 0: must be an integer >= 1",
        ),
        (
            "train.schedule.name=cosine train.schedule.warmup_epochs=-1",
            r"train\.schedule\.warmup_epochs = -1: must be an integer >= 0",
        ),
        (
            "train.early_stopping.enabled=true train.early_stopping.patience=0",
            r"train\.early_stopping\.patience = 0: must be an integer >= 1",
        ),
        (
            "train.early_stopping.enabled=true train.early_stopping.monitor=loss",
            r"train\.early_stopping\.monitor = 'loss': must be one of val_accuracy, val_loss",
        ),
        (
            "train.early_stopping.enabled=true data.validation_size=0",
            r"train\.early_stopping\.enabled = True: .*needs data\.validation_size > 0",
        ),
    ],
)
def test_invalid_values_are_rejected_naming_key_value_and_rule(override, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose(override.split()))


def test_training_options_reach_fit():
    cfg = validate(
        compose(
            [
                "model.dropout=0.5",
                "model.input_dropout=0.2",
                "train.max_norm=3.5",
                "train.schedule.name=cosine",
                "train.schedule.warmup_epochs=2",
                "train.early_stopping.enabled=true",
                "train.early_stopping.patience=4",
            ]
        )
    )
    options = fit_options(cfg)
    assert (options["dropout"], options["input_dropout"], options["max_norm"]) == (0.5, 0.2, 3.5)
    assert options["schedule"].config() == {
        "name": "cosine",
        "warmup_epochs": 2,
        "final_fraction": 0.0,
    }
    assert options["early_stopping"].config() == {
        "monitor": "val_accuracy",
        "patience": 4,
        "min_delta": 0.0,
        "restore_best": True,
    }
    defaults = fit_options(validate(compose()))
    assert defaults == {
        "schedule": None,
        "dropout": 0.0,
        "input_dropout": 0.0,
        "max_norm": None,
        "early_stopping": None,
    }


@pytest.mark.parametrize("group", ["experiment=best", "hparams_search=mnist_optuna"])
def test_ready_made_experiments_and_searches_compose_and_validate(group):
    cfg = validate(compose([group]))
    assert cfg.model.hidden_activation == "relu"
    assert cfg.model.dropout > 0


def test_load_params_validates_the_file(tmp_path):
    bad = to_dict(validate(compose()))
    bad["train"]["epochs"] = -2
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match=r"train\.epochs = -2"):
        load_params(path)
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "missing.yaml")


def test_every_stage_param_exists_in_params_yaml():
    params = OmegaConf.load(ROOT / "params.yaml")
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        for key in stage.get("params", []):
            assert OmegaConf.select(params, key, default="<missing>") != "<missing>", (name, key)
