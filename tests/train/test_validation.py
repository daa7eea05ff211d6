"""--val-fraction: the monitor and every choice read validation; the test split is read once.

Oracles: the validation positions recomputed from the digits labels, a test ``Dataset`` that
fails when read, and the counts of each class (round(F · n_c)).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from contrastkit.cli import main
from contrastkit.data import load_dataset
from contrastkit.data.splits import stratified_split
from contrastkit.errors import ContrastkitError
from contrastkit.train.config import EmbedConfig, KnnConfig, PretrainConfig, ProbeConfig, RunConfig
from contrastkit.train.evaluate import embed, knn, linear_probe
from contrastkit.train.metrics import knn_curve, read_metrics
from contrastkit.train.pretrain import pretrain
from contrastkit.train.run import run

FAST = {"batch_size": 256, "epochs": 1, "warmup_epochs": 0.0, "quiet": True, "device": "cpu"}


class Unreadable(Dataset):
    """A test split that fails the test if anything reads an image of it."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, i: int):
        raise AssertionError("the test split was read")


@pytest.fixture(scope="module")
def val_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("val") / "supcon"
    pretrain(PretrainConfig(data="digits", method="supcon", val_fraction=0.2, out=str(out), **FAST))
    return out


def digits_val_positions(fraction: float) -> torch.Tensor:
    labels = load_dataset("digits", "train").labels
    return stratified_split(labels, fraction, seed=0)[1]


def test_pretraining_never_reads_the_test_split(tmp_path) -> None:
    train = load_dataset("digits", "train")
    cfg = PretrainConfig(method="ce", val_fraction=0.1, limit=200, out=str(tmp_path / "v"), **FAST)
    r = pretrain(cfg, data=train, test_data=Unreadable())
    assert r.knn_split == "val" and r.knn_acc is not None
    with pytest.raises(AssertionError, match="the test split was read"):  # the guard is live
        pretrain(
            PretrainConfig(method="ce", limit=200, out=str(tmp_path / "t"), **FAST),
            data=train,
            test_data=Unreadable(),
        )


def test_monitor_scores_the_validation_images(val_run) -> None:
    epochs = [r for r in read_metrics(val_run) if r["kind"] == "epoch"]
    assert [r["knn_split"] for r in epochs] == ["val"]
    val = knn(KnnConfig(run_dir=str(val_run), split="val", device="cpu"))
    # the monitor's bank is the training split without the validation images, as knn's
    assert epochs[-1]["knn_acc"] == pytest.approx(val["val_acc"], abs=1e-6)
    labels = load_dataset("digits", "train").labels
    per_class = torch.bincount(labels).tolist()
    assert val["n_val"] == sum(max(1, round(0.2 * n)) for n in per_class) == 287
    assert val["n_train"] + val["n_val"] == len(labels) == 1437
    saved = json.loads((val_run / "knn_val.json").read_text())
    assert saved["split"] == "val" and "test_acc" not in saved
    assert knn_curve(val_run) == [(1, epochs[-1]["knn_acc"])]  # no test point closes it


def test_embed_val_holds_the_held_out_images(val_run, tmp_path) -> None:
    cfg = EmbedConfig(run_dir=str(val_run), split="val", out=str(tmp_path / "val.npz"))
    path = embed(replace(cfg, device="cpu"))
    got = np.load(path)
    want = load_dataset("digits", "train").labels[digits_val_positions(0.2)]
    np.testing.assert_array_equal(got["labels"], want.numpy())


def test_probe_on_val_and_test_trains_on_the_same_images(val_run) -> None:
    p_val = linear_probe(ProbeConfig(run_dir=str(val_run), split="val", epochs=2, device="cpu"))
    p_test = linear_probe(ProbeConfig(run_dir=str(val_run), split="test", epochs=2, device="cpu"))
    assert p_val["train_acc"] == p_test["train_acc"]  # one probe, scored on two splits
    assert (p_val["split"], p_val["n_val"], p_test["split"], p_test["n_test"]) == (
        "val",
        287,
        "test",
        360,
    )
    assert (val_run / "probe_val.json").is_file() and (val_run / "embeddings_val.npz").is_file()


def test_a_run_without_validation_refuses_split_val(tmp_path, capsys) -> None:
    out = tmp_path / "plain"
    pretrain(PretrainConfig(data="digits", method="ce", limit=64, out=str(out), **FAST))
    for call in (
        lambda: knn(KnnConfig(run_dir=str(out), split="val", device="cpu")),
        lambda: linear_probe(ProbeConfig(run_dir=str(out), split="val", device="cpu")),
    ):
        with pytest.raises(ContrastkitError, match=r"no validation split.*--val-fraction") as e:
            call()
        assert "\n" not in str(e.value)
    argv = ["embed", str(out), "--split", "val", "--out", str(tmp_path / "e.npz")]
    assert main([*argv, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: this run has no validation split") and err.count("\n") == 1
    assert not (tmp_path / "e.npz").exists()


def test_run_writes_validation_then_test_files(tmp_path) -> None:
    cfg = RunConfig(
        method="ce",
        pretrain=PretrainConfig(
            data="digits", val_fraction=0.1, limit=300, out=str(tmp_path / "r"), **FAST
        ),
    )
    cfg.probe.epochs = 2
    run(cfg)
    d = tmp_path / "r" / "ce"
    for name, split in [
        ("knn_val", "val"),
        ("probe_val", "val"),
        ("knn", "test"),
        ("probe", "test"),
    ]:
        got = json.loads((d / f"{name}.json").read_text())
        assert got["split"] == split and f"{split}_acc" in got, name
    assert "head_val_acc" in json.loads((d / "probe_val.json").read_text())
    p_val, p_test = (json.loads((d / f).read_text()) for f in ("probe_val.json", "probe.json"))
    assert p_test["probe_trained_for"] == "probe_val.json"  # one probe, trained once
    assert p_test["train_acc"] == p_val["train_acc"]


@pytest.mark.parametrize("bad", [1.0, -0.1, float("inf")])
def test_val_fraction_outside_0_1_is_refused(bad) -> None:
    with pytest.raises(
        ContrastkitError,
        match=r"--val-fraction \(val_fraction\) must be a finite "
        r"number in \[0, 1\)",
    ):
        PretrainConfig(val_fraction=bad)


def _eval_files(run_dir: Path) -> dict[str, object]:
    """Every evaluation file of a run: JSON without its timings, npz arrays as lists."""
    out: dict[str, object] = {}
    for split in ("val", "test"):
        for kind in ("knn", "probe", "retrieval"):
            name = f"{kind}.json" if split == "test" else f"{kind}_{split}.json"
            got = json.loads((run_dir / name).read_text())
            got.pop("seconds")
            got.pop("probe_trained_for", None)
            out[name] = got
        with np.load(run_dir / f"embeddings_{split}.npz") as npz:
            out[f"embeddings_{split}"] = {k: npz[k].tolist() for k in npz.files}
    return out


def test_run_trains_the_probe_once_and_scores_val_and_test_as_two_evaluations_would(
    val_run, monkeypatch
) -> None:
    from contrastkit.train import evaluate as evaluate_module
    from contrastkit.train.evaluate import evaluate_splits, knn_and_probe

    fits, extractions = [], []
    real_fit, real_extract = evaluate_module.fit_linear_probe, evaluate_module.extract_features

    def counting_fit(*args, **kwargs):
        fits.append(kwargs["num_classes"])
        return real_fit(*args, **kwargs)

    def counting_extract(*args, **kwargs):
        features = real_extract(*args, **kwargs)
        extractions.append(len(features))
        return features

    monkeypatch.setattr(evaluate_module, "fit_linear_probe", counting_fit)
    monkeypatch.setattr(evaluate_module, "extract_features", counting_extract)
    probe = ProbeConfig(run_dir=str(val_run), epochs=3, seed=4, device="cpu")
    done = evaluate_splits(val_run, ["val", "test"], probe=probe)
    assert fits == [10] and extractions == [1150, 287, 360]  # train, val, test features once
    once = _eval_files(val_run)
    assert json.loads((val_run / "probe.json").read_text())["probe_trained_for"] == (
        "probe_val.json"
    )
    assert "probe_trained_for" not in json.loads((val_run / "probe_val.json").read_text())
    assert done["test"][1]["test_acc"] == once["probe.json"]["test_acc"]  # type: ignore[index]

    fits.clear(), extractions.clear()
    for split in ("val", "test"):  # the oracle: what run did before, one evaluation per split
        knn_and_probe(val_run, probe=replace(probe, split=split))
    assert fits == [10, 10] and extractions == [1150, 287, 1150, 360]
    assert _eval_files(val_run) == once  # every figure, confusion and embedding identical


@pytest.mark.parametrize(
    ("splits", "message"),
    [
        ([], "splits must be a list of distinct splits (val, test), got []"),
        (
            ["val", "val"],
            "splits must be a list of distinct splits (val, test), got ['val', 'val']",
        ),
        ("test", "splits must be a list of distinct splits (val, test), got 'test'"),
        (
            ["train"],
            "unknown evaluation split 'train' for --split (split); choose one of val, test",
        ),
    ],
)
def test_evaluate_splits_refuses_bad_splits_before_loading(tmp_path, splits, message) -> None:
    from contrastkit.train.evaluate import evaluate_splits

    probe = ProbeConfig(run_dir=str(tmp_path), device="cpu")
    with pytest.raises(ContrastkitError) as info:  # the directory holds no run: not read yet
        evaluate_splits(tmp_path / "no-run", splits, probe=probe)
    assert str(info.value) == message


def _digits_features(run_dir: Path, images: torch.Tensor) -> torch.Tensor:
    """The encoder's features of ``images``, extracted directly (the oracle of embed)."""
    from contrastkit.train.evaluate import load_encoder
    from contrastkit.train.features import extract_features

    run = load_encoder(run_dir, "cpu")
    return extract_features(
        run.encoder, [images], mean=run.shape.mean, std=run.shape.std, device=run.device
    )


def test_embed_train_holds_the_images_the_encoder_trained_on_and_val_the_rest(
    val_run, tmp_path
) -> None:
    digits = load_dataset("digits", "train")
    val = digits_val_positions(0.2)
    keep = torch.tensor(sorted(set(range(len(digits))) - set(val.tolist())))
    got = {}
    for split in ("train", "val"):
        cfg = EmbedConfig(str(val_run), split, str(tmp_path / f"{split}.npz"), "cpu")
        with np.load(embed(cfg)) as npz:
            got[split] = (torch.from_numpy(npz["features"]), torch.from_numpy(npz["labels"]))
    assert len(got["train"][1]) + len(got["val"][1]) == len(digits) == 1437
    every = _digits_features(val_run, digits.images)  # (1437, F)
    for split, positions in (("train", keep), ("val", val)):
        assert torch.equal(got[split][1], digits.labels[positions]), split
        torch.testing.assert_close(got[split][0], every[positions], rtol=0, atol=1e-5)


def test_embed_train_of_a_limited_run_is_the_evaluations_training_images(tmp_path) -> None:
    # --limit trains on a subset, but kNN, probe and retrieval use the whole training split
    # without the validation images: embed gives those, as the evaluations see them
    out = tmp_path / "lim"
    pretrain(PretrainConfig(method="ce", val_fraction=0.1, limit=200, out=str(out), **FAST))
    digits = load_dataset("digits", "train")
    keep = stratified_split(digits.labels, 0.1, seed=0)[0]
    with np.load(embed(EmbedConfig(str(out), "train", str(tmp_path / "e.npz"), "cpu"))) as npz:
        labels, features = torch.from_numpy(npz["labels"]), torch.from_numpy(npz["features"])
    held_out = sum(max(1, round(0.1 * n)) for n in torch.bincount(digits.labels).tolist())
    assert torch.equal(labels, digits.labels[keep]) and len(labels) == 1437 - held_out == 1295
    want = _digits_features(out, digits.images[keep])
    torch.testing.assert_close(features, want, rtol=0, atol=1e-5)
    bank = knn(KnnConfig(run_dir=str(out), device="cpu"))
    assert bank["n_train"] == len(labels)
