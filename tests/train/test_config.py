"""Option parsing helpers of ``contrastkit.train.config``."""

import dataclasses
import math
import typing

import pytest

from contrastkit.data import PRESETS
from contrastkit.errors import ContrastkitError
from contrastkit.train.config import (
    EmbedConfig,
    KnnConfig,
    PrepareConfig,
    PretrainConfig,
    ProbeConfig,
    ProbeSettings,
    RunConfig,
    comma_list,
    from_dict,
    load_yaml,
    options,
    to_dict,
)


@pytest.mark.parametrize(
    ("texts", "items"),
    [
        (("supcon,ce",), ["supcon", "ce"]),
        ((" supcon , ce ,",), ["supcon", "ce"]),  # spaces and a trailing comma
        (("precision", "lr,seed"), ["precision", "lr", "seed"]),  # a repeated --pool flag
        (("", " , "), []),
        ((), []),
    ],
)
def test_comma_list(texts, items):
    assert comma_list(*texts) == items


def test_augment_help_names_every_preset():
    (field,) = [f for f in dataclasses.fields(PretrainConfig) if f.name == "augment"]
    listed = field.metadata["help"].split(":")[1].split("(")[0].replace(" or ", ", ")
    assert sorted(name.strip() for name in listed.split(",")) == sorted(PRESETS)


# --- every option is validated, in one place ----------------------------------------------------

CONFIGS = [
    PretrainConfig,
    ProbeConfig,
    ProbeSettings,
    KnnConfig,
    EmbedConfig,
    RunConfig,
    PrepareConfig,
]
FREE_TEXT = {"data_root", "train_split"}  # a directory the loader checks; a split checked below


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_every_number_and_name_option_has_a_rule(cls):
    # every flat option (a RunConfig's include those of its pretrain and probe sub-configs)
    for o in options(cls):
        kinds = typing.get_args(o.hint) or (o.hint,)
        if bool in kinds or o.name in FREE_TEXT:
            continue
        assert o.field.metadata.get("rule") is not None, f"{cls.__name__}.{o.name} has no rule"


NAN, INF = math.nan, math.inf
BAD = [
    # (config, option, value, what the one-line message says)
    (PretrainConfig, "data", "imagenet", "unknown data set 'imagenet' for --data (data)"),
    (PretrainConfig, "data", "folder:", "unknown data set 'folder:' for --data (data)"),
    (PretrainConfig, "image_size", 0, "--image-size (image_size) must be an integer >= 1, got 0"),
    (PretrainConfig, "limit", 1, "--limit (limit) must be an integer >= 2, got 1"),
    (PretrainConfig, "workers", -1, "--workers (workers) must be an integer >= 0, got -1"),
    (PretrainConfig, "max_steps", 0, "--max-steps (max_steps) must be an integer >= 1, got 0"),
    (PretrainConfig, "save_every", 0, "--save-every (save_every) must be an integer >= 1, got 0"),
    (PretrainConfig, "data", "shards:", "unknown data set 'shards:' for --data (data)"),
    (PretrainConfig, "augment", "bogus", "unknown augmentation preset 'bogus' for --augment"),
    (PretrainConfig, "method", "byol", "unknown method 'byol' for --method (method)"),
    (PretrainConfig, "model", "vit", "unknown model 'vit' for --model (model)"),
    (PretrainConfig, "norm", "layer", "unknown norm 'layer' for --norm (norm)"),
    (PretrainConfig, "epochs", 0, "--epochs (epochs) must be an integer >= 1, got 0"),
    (PretrainConfig, "batch_size", 1, "--batch-size (batch_size) must be an integer >= 2"),
    (PretrainConfig, "views", 0, "--views (views) must be an integer >= 1, got 0"),
    (PretrainConfig, "optimizer", "adam", "unknown optimizer 'adam' for --optimizer"),
    (PretrainConfig, "lr", -1.0, "--lr (lr) must be a finite number > 0, got -1.0"),
    (PretrainConfig, "lr", 0, "--lr (lr) must be a finite number > 0, got 0.0"),
    (PretrainConfig, "lr", NAN, "--lr (lr) must be a finite number > 0, got nan"),
    (PretrainConfig, "momentum", 1.0, "--momentum (momentum) must be a finite number in [0, 1)"),
    (PretrainConfig, "momentum", -0.1, "--momentum (momentum) must be a finite number in [0, 1)"),
    (PretrainConfig, "weight_decay", -1e-4, "--weight-decay (weight_decay) must be a finite"),
    (PretrainConfig, "weight_decay", INF, "--weight-decay (weight_decay) must be a finite"),
    (PretrainConfig, "warmup_epochs", -1, "--warmup-epochs (warmup_epochs) must be a finite"),
    (PretrainConfig, "warmup_epochs", NAN, "--warmup-epochs (warmup_epochs) must be a finite"),
    (PretrainConfig, "temperature", 0.0, "--temperature (temperature) must be a finite number > 0"),
    (PretrainConfig, "temperature", NAN, "--temperature (temperature) must be a finite number > 0"),
    (PretrainConfig, "temperature", -INF, "--temperature (temperature) must be a finite number"),
    (PretrainConfig, "proj_dim", 0, "--proj-dim (proj_dim) must be an integer >= 1, got 0"),
    (PretrainConfig, "knn_k", 0, "--knn-k (knn_k) must be an integer >= 1, got 0"),
    (PretrainConfig, "knn_t", 0.0, "--knn-t (knn_t) must be a finite number > 0, got 0.0"),
    (PretrainConfig, "knn_t", INF, "--knn-t (knn_t) must be a finite number > 0, got inf"),
    (PretrainConfig, "knn_every", -1, "--knn-every (knn_every) must be an integer >= 0, got -1"),
    (PretrainConfig, "seed", -1, "--seed (seed) must be an integer in [0, 2**63), got -1"),
    (PretrainConfig, "seed", 2**63, "--seed (seed) must be an integer in [0, 2**63)"),
    (PretrainConfig, "device", "tpu", "unknown device 'tpu' for --device (device)"),
    (PretrainConfig, "device", "cuda:x", "unknown device 'cuda:x' for --device (device)"),
    (PretrainConfig, "precision", "fp8", "unknown precision 'fp8' for --precision (precision)"),
    (PretrainConfig, "out", "", "--out (out) must be a non-empty path, got ''"),
    (PretrainConfig, "epochs", "ten", "--epochs (epochs) must be int or None, got 'ten'"),
    (PretrainConfig, "epochs", 1.5, "--epochs (epochs) must be int or None, got 1.5"),
    (PretrainConfig, "views", 1.5, "--views (views) must be int, got 1.5"),
    (ProbeConfig, "epochs", 0, "--epochs (epochs) must be an integer >= 1, got 0"),
    (ProbeConfig, "batch_size", 0, "--batch-size (batch_size) must be an integer >= 1, got 0"),
    (ProbeConfig, "lr", NAN, "--lr (lr) must be a finite number > 0, got nan"),
    (ProbeConfig, "weight_decay", -1.0, "--weight-decay (weight_decay) must be a finite number"),
    (ProbeConfig, "seed", -2, "--seed (seed) must be an integer in [0, 2**63), got -2"),
    (ProbeConfig, "device", "gpu", "unknown device 'gpu' for --device (device)"),
    (KnnConfig, "k", 0, "--k (k) must be an integer >= 1, got 0"),
    (KnnConfig, "t", 0.0, "--t (t) must be a finite number > 0, got 0.0"),
    (KnnConfig, "t", NAN, "--t (t) must be a finite number > 0, got nan"),
    (EmbedConfig, "split", " ", "--split (split) must be a non-empty split name, got ' '"),
    (EmbedConfig, "out", "", "--out (out) must be a non-empty path, got ''"),
    (RunConfig, "method", "simclr,byol", "unknown method 'byol' for --method (method)"),
    (RunConfig, "method", " , ", "--method (method) must name at least one method"),
    (
        PretrainConfig,
        "momentum_ema",
        1.5,
        "--momentum-ema (momentum_ema) must be a finite number in [0, 1], got 1.5",
    ),
    (
        PretrainConfig,
        "momentum_ema",
        -0.1,
        "--momentum-ema (momentum_ema) must be a finite number in [0, 1], got -0.1",
    ),
    (PretrainConfig, "queue_size", 0, "--queue-size (queue_size) must be an integer >= 1, got 0"),
    (
        PretrainConfig,
        "ema_schedule",
        "linear",
        "unknown EMA schedule 'linear' for --ema-schedule (ema_schedule); choose one of constant, cosine",
    ),
    (PretrainConfig, "bn_splits", 0, "--bn-splits (bn_splits) must be an integer >= 1, got 0"),
    (RunConfig, "data", "mnist", "unknown data set 'mnist' for --data (data)"),
    (RunConfig, "epochs", 0, "--epochs (epochs) must be an integer >= 1, got 0"),
    (RunConfig, "batch_size", 1, "--batch-size (batch_size) must be an integer >= 2"),
    (RunConfig, "lr", INF, "--lr (lr) must be a finite number > 0, got inf"),
    (RunConfig, "temperature", NAN, "--temperature (temperature) must be a finite number > 0"),
    (RunConfig, "warmup_epochs", -0.5, "--warmup-epochs (warmup_epochs) must be a finite"),
    (RunConfig, "weight_decay", NAN, "--weight-decay (weight_decay) must be a finite number"),
    (RunConfig, "augment", "strong", "unknown augmentation preset 'strong' for --augment"),
    (RunConfig, "views", 0, "--views (views) must be an integer >= 1, got 0"),
    (RunConfig, "proj_dim", 0, "--proj-dim (proj_dim) must be an integer >= 1, got 0"),
    (RunConfig, "knn_every", -1, "--knn-every (knn_every) must be an integer >= 0"),
    (RunConfig, "probe_epochs", 0, "--probe-epochs (probe_epochs) must be an integer >= 1"),
    (RunConfig, "probe_batch_size", 0, "--probe-batch-size (probe_batch_size) must be an integer"),
    (RunConfig, "probe_lr", 0, "--probe-lr (probe_lr) must be a finite number > 0, got 0.0"),
    (RunConfig, "probe_weight_decay", NAN, "--probe-weight-decay (probe_weight_decay) must be"),
    (RunConfig, "momentum", 1.0, "--momentum (momentum) must be a finite number in [0, 1)"),
    (RunConfig, "knn_k", 0, "--knn-k (knn_k) must be an integer >= 1, got 0"),
    (RunConfig, "knn_t", -1.0, "--knn-t (knn_t) must be a finite number > 0, got -1.0"),
    (RunConfig, "precision", "half", "unknown precision 'half' for --precision"),
    (RunConfig, "model", "vgg", "unknown model 'vgg' for --model (model)"),
    (RunConfig, "norm", "instance", "unknown norm 'instance' for --norm (norm)"),
    (RunConfig, "optimizer", "rmsprop", "unknown optimizer 'rmsprop' for --optimizer"),
    (RunConfig, "image_size", -3, "--image-size (image_size) must be an integer >= 1, got -3"),
    (RunConfig, "limit", 0, "--limit (limit) must be an integer >= 2, got 0"),
    (RunConfig, "seed", -1, "--seed (seed) must be an integer in [0, 2**63), got -1"),
]


@pytest.mark.parametrize(
    ("cls", "option", "value", "message"),
    BAD,
    ids=[f"{c.__name__}-{o}={v!r}" for c, o, v, _ in BAD],
)
def test_a_bad_value_is_one_error_naming_option_value_and_rule(cls, option, value, message):
    base = {} if cls in (PretrainConfig, RunConfig) else {"run_dir": "runs/x"}
    with pytest.raises(ContrastkitError) as info:
        from_dict(cls, {**base, option: value})
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("cls", "values", "message"),
    [
        (
            PretrainConfig,
            {"method": "simclr", "views": 1},
            "--views (views) must be >= 2 for simclr",
        ),
        (
            RunConfig,
            {"method": "ce,simclr", "views": 1},
            "--views (views) must be >= 2 for simclr",
        ),
        (
            PretrainConfig,
            {"train_split": "unlabeled"},
            "unknown split 'unlabeled' for --train-split",
        ),
    ],
)
def test_rules_across_options(cls, values, message):
    with pytest.raises(ContrastkitError, match=message.replace("(", r"\(").replace(")", r"\)")):
        from_dict(cls, values)


def test_the_edges_of_each_range_are_accepted():
    edges = {
        "momentum": 0.0,
        "weight_decay": 0.0,
        "warmup_epochs": 0.0,
        "knn_every": 0,
        "seed": 2**63 - 1,
        "epochs": 1,
        "batch_size": 2,
        "views": 1,
        "limit": 2,
        "lr": 1e-12,
        "device": "cuda:1",  # a name; whether the device exists is checked when it is used
        "data": "folder:/somewhere",
        "train_split": "train",
    }
    cfg = from_dict(PretrainConfig, edges)
    assert cfg.momentum == 0.0 and cfg.seed == 2**63 - 1
    assert from_dict(RunConfig, {"method": "ce", "views": 1}).pretrain.views == 1  # no simclr
    assert from_dict(PretrainConfig, {"data": "stl10", "train_split": "train+unlabeled"})


def test_yaml_nan_and_inf_are_caught(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("temperature: .nan\nlr: .inf\n")
    values = load_yaml(str(f))
    assert math.isnan(values["temperature"]) and values["lr"] == math.inf  # YAML's spelling
    with pytest.raises(ContrastkitError, match=r"--lr \(lr\) must be a finite number > 0, got inf"):
        from_dict(PretrainConfig, values)  # the first bad option, in the order of the fields
    with pytest.raises(ContrastkitError, match=r"--temperature \(temperature\) must be a finite"):
        from_dict(PretrainConfig, {"temperature": values["temperature"]})


def test_a_config_file_that_is_not_utf8_is_one_error(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_bytes(b"epochs: 3\nmethod: \xff\n")
    with pytest.raises(ContrastkitError, match="is not UTF-8 text"):
        load_yaml(str(f))


def test_a_config_checks_itself_when_built_from_python():
    with pytest.raises(ContrastkitError, match=r"--epochs \(epochs\) must be an integer >= 1"):
        PretrainConfig(epochs=0)
    with pytest.raises(ContrastkitError, match=r"--lr \(lr\) must be a finite number > 0"):
        dataclasses.replace(PretrainConfig(), lr=-1.0)  # replace builds, so it checks too
    with pytest.raises(ContrastkitError, match=r"--views \(views\) must be >= 2 for simclr"):
        RunConfig(method="ce,simclr", pretrain=PretrainConfig(views=1))
    with pytest.raises(ContrastkitError, match=r"--epochs \(epochs\) must be an integer >= 1"):
        ProbeSettings(epochs=0)  # as a Python user spells it: the field of ProbeSettings
    assert PretrainConfig(lr=1).lr == 1.0 and isinstance(PretrainConfig(lr=1).lr, float)


def test_a_run_config_is_flat_as_flags_and_yaml_keys():
    flat = {"method": ["supcon", "ce"], "epochs": 3, "probe_epochs": 7, "probe_lr": 0.5}
    cfg = from_dict(RunConfig, flat)  # a YAML list of methods is their comma list
    assert cfg.method == "supcon,ce" and cfg.methods == ["supcon", "ce"]
    assert cfg.pretrain.epochs == 3 and cfg.pretrain.method == "supcon"  # the field's default
    assert cfg.probe == ProbeSettings(epochs=7, lr=0.5)
    d = to_dict(cfg)
    assert d["method"] == "supcon,ce" and d["epochs"] == 3 and d["probe_epochs"] == 7
    assert "pretrain" not in d and "probe" not in d and "probe_method" not in d
    assert set(d) == {o.name for o in options(RunConfig)}
    assert from_dict(RunConfig, d) == cfg  # the flat dict rebuilds the same config
    assert from_dict(RunConfig, {"method": "ce,ce,supcon"}).methods == ["ce", "supcon"]
