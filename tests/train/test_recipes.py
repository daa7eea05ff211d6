"""The recipe fills what a config leaves unset: per data set, per method, by the run's length."""

import re

import pytest

from contrastkit.errors import ContrastkitError, ContrastkitWarning
from contrastkit.train import recipes
from contrastkit.train.config import CUSTOM_DATA, PretrainConfig, RunConfig, from_dict
from contrastkit.train.recipes import resolve, with_data_defaults

# (data, epochs, batch size, kNN k): recipes.DATA_DEFAULTS, and the generic line for the rest
DATA_LINES = [
    ("digits", 100, 256, 20),
    ("fashion-mnist", 30, 256, 200),  # `pretrain --data fashion-mnist` trains 30, as `run` did
    ("cifar10", 100, 256, 200),
    (CUSTOM_DATA, 100, 256, 200),  # a Dataset object
]


@pytest.mark.parametrize(("data", "epochs", "batch_size", "knn_k"), DATA_LINES)
def test_unset_epochs_batch_and_k_come_from_the_data_set(data, epochs, batch_size, knn_k):
    cfg = resolve(PretrainConfig(data=data, out="unused"))
    assert (cfg.epochs, cfg.batch_size, cfg.knn_k) == (epochs, batch_size, knn_k)
    given = resolve(PretrainConfig(data=data, epochs=7, batch_size=8, knn_k=3, warmup_epochs=1))
    assert (given.epochs, given.batch_size, given.knn_k) == (7, 8, 3)  # given values stay


def test_pretrain_and_run_share_the_data_sets_epochs():
    # the flat options of both commands leave epochs to the recipe
    pretrain = from_dict(PretrainConfig, {"data": "fashion-mnist"})
    run = from_dict(RunConfig, {"data": "fashion-mnist", "method": "supcon"})
    assert pretrain.epochs is None and run.pretrain.epochs is None
    assert with_data_defaults(pretrain).epochs == with_data_defaults(run.pretrain).epochs == 30


@pytest.mark.parametrize(
    ("method", "optimizer", "lr", "temperature", "warmup"),
    [
        ("simclr", "sgd", 1.0, 0.5, 10.0),
        ("supcon", "sgd", 0.5, 0.1, 10.0),
        ("supcon", "lars", 0.5, 0.1, 10.0),
        ("ce", "sgd", 0.2, 1.0, 5.0),
        ("supcon", "adamw", 0.005, 0.1, 10.0),  # AdamW: a hundredth of SGD's rate
    ],
)
def test_unset_method_options_come_from_the_method(method, optimizer, lr, temperature, warmup):
    cfg = resolve(PretrainConfig(method=method, optimizer=optimizer))
    assert cfg.lr == pytest.approx(lr, rel=1e-15) and cfg.weight_decay == 5e-4
    assert (cfg.temperature, cfg.warmup_epochs) == (temperature, warmup)
    mine = resolve(PretrainConfig(method=method, lr=0.3, temperature=0.2, weight_decay=0.0))
    assert (mine.lr, mine.temperature, mine.weight_decay) == (0.3, 0.2, 0.0)


def test_the_default_run_directory_names_data_and_method():
    assert re.fullmatch(
        r"runs/digits-simclr-\d{8}-\d{6}",
        str(resolve(PretrainConfig("digits", method="simclr")).out),
    )
    assert re.fullmatch(
        r"runs/dataset-object-ce-\d{8}-\d{6}",
        str(resolve(PretrainConfig(CUSTOM_DATA, method="ce")).out),
    )
    assert resolve(PretrainConfig(out="here")).out == "here"


def test_a_warmup_as_long_as_the_run_becomes_a_tenth_of_it():
    with pytest.warns(ContrastkitWarning, match="a warm-up of 10 epochs .* warming up for 0.3"):
        assert resolve(PretrainConfig(epochs=3)).warmup_epochs == pytest.approx(0.3)
    with pytest.warns(ContrastkitWarning, match="a warm-up of 4 epochs"):
        assert resolve(PretrainConfig(epochs=4, warmup_epochs=4)).warmup_epochs == 0.4
    assert resolve(PretrainConfig(epochs=4, warmup_epochs=3.5)).warmup_epochs == 3.5


def test_a_run_gives_the_moco_options_to_the_methods_that_use_them():
    run = RunConfig(
        method="simclr,moco,mocov3", pretrain=PretrainConfig(queue_size=100, symmetric=True)
    )
    simclr = recipes.resolve(recipes.for_method(run.pretrain, "simclr", "out/simclr"))
    moco = recipes.resolve(recipes.for_method(run.pretrain, "moco", "out/moco"))
    v3 = recipes.resolve(recipes.for_method(run.pretrain, "mocov3", "out/mocov3"))
    assert (simclr.queue_size, simclr.momentum_ema, simclr.symmetric) == (None, None, False)
    assert (moco.queue_size, moco.momentum_ema, moco.ema_schedule, moco.symmetric) == (
        100,
        0.99,
        "constant",
        True,
    )
    assert (v3.queue_size, v3.momentum_ema, v3.temperature) == (None, 0.99, 0.2)
    assert moco.temperature == 0.2 and moco.bn_splits is None
    split = recipes.resolve(PretrainConfig(method="moco", norm="split", out="x"))
    assert split.bn_splits == 8
    with pytest.raises(
        ContrastkitError, match="is an option of moco and supcon-moco, not of simclr, ce"
    ):
        RunConfig(method="simclr,ce", pretrain=PretrainConfig(queue_size=100))
