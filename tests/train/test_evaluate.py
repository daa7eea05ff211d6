import json

import numpy as np
import pytest
import torch

from contrastkit.errors import ContrastkitError
from contrastkit.train import evaluate as evaluate_module
from contrastkit.train.config import KnnConfig, PretrainConfig, ProbeConfig
from contrastkit.train.evaluate import knn, knn_and_probe, linear_probe
from contrastkit.train.pretrain import pretrain

TINY = {"limit": 64, "batch_size": 32, "epochs": 1, "quiet": True, "knn_k": 10, "device": "cpu"}


@pytest.fixture(scope="module")
def ce_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "ce"
    pretrain(PretrainConfig(data="digits", method="ce", out=str(out), **TINY))
    return out


def _count_extractions(monkeypatch):
    calls = []
    real = evaluate_module.extract_features

    def counting(*args, **kwargs):
        features = real(*args, **kwargs)  # the images come as a stream of batches
        calls.append(len(features))
        return features

    monkeypatch.setattr(evaluate_module, "extract_features", counting)
    return calls


def test_knn_and_probe_writes_what_knn_then_linear_probe_write(ce_run, monkeypatch):
    calls = _count_extractions(monkeypatch)
    probe = ProbeConfig(run_dir=str(ce_run), epochs=3, device="cpu")
    k_shared, p_shared = knn_and_probe(ce_run, probe=probe)
    assert calls == [1437, 360]  # digits train and test split, once each
    emb_shared = np.load(ce_run / "embeddings_test.npz")["features"]
    assert json.loads((ce_run / "probe.json").read_text()) == p_shared
    assert p_shared["features_from"] == "knn"

    calls.clear()
    k_alone = knn(KnnConfig(run_dir=str(ce_run), device="cpu"))
    p_alone = linear_probe(probe)
    assert calls == [1437, 360, 1437, 360]
    for key in ["test_acc", "k", "t", "n_train", "n_test"]:
        assert k_shared[key] == k_alone[key], key
    for key in ["train_acc", "test_acc", "head_test_acc", "confusion", "classes", "epochs"]:
        assert p_shared[key] == p_alone[key], key
    assert "features_from" not in p_alone
    np.testing.assert_array_equal(emb_shared, np.load(ce_run / "embeddings_test.npz")["features"])


def test_knn_and_probe_rejects_bad_knn_settings_before_extracting(ce_run, monkeypatch):
    calls = _count_extractions(monkeypatch)
    probe = ProbeConfig(run_dir=str(ce_run), device="cpu")
    with pytest.raises(ContrastkitError, match=r"--k \(k\) must be an integer >= 1, got 0"):
        knn_and_probe(ce_run, probe=probe, knn=KnnConfig(run_dir=str(ce_run), k=0))
    with pytest.raises(ContrastkitError, match=r"--t \(t\) must be a finite number > 0, got 0.0"):
        knn_and_probe(ce_run, probe=probe, knn=KnnConfig(run_dir=str(ce_run), t=0.0))
    assert calls == []


def test_knn_and_probe_uses_the_k_and_t_given(ce_run):
    probe = ProbeConfig(run_dir=str(ce_run), epochs=1, device="cpu")
    k_given, _ = knn_and_probe(ce_run, probe=probe, knn=KnnConfig(str(ce_run), k=3, t=0.5))
    assert (k_given["k"], k_given["t"]) == (3, 0.5)
    k_alone = knn(KnnConfig(run_dir=str(ce_run), k=3, t=0.5, device="cpu"))
    assert k_given["test_acc"] == k_alone["test_acc"]
    k_run, _ = knn_and_probe(ce_run, probe=probe)  # the run's own: knn_k 10, knn_t 0.1
    assert (k_run["k"], k_run["t"]) == (10, 0.1)


def test_retrieval_ranks_the_test_split_against_the_training_split(ce_run, monkeypatch, tmp_path):
    from contrastkit.cli import main
    from contrastkit.train.config import EmbedConfig, RetrievalConfig
    from contrastkit.train.evaluate import embed, retrieval
    from contrastkit.train.retrieval import retrieval_metrics

    calls = _count_extractions(monkeypatch)
    got = retrieval(RetrievalConfig(run_dir=str(ce_run), device="cpu"))
    assert calls == [1437, 360]  # reference (train), then the queries (test)
    assert json.loads((ce_run / "retrieval.json").read_text()) == got
    feats = {}
    for split in ("train", "test"):
        e = np.load(embed(EmbedConfig(str(ce_run), split, str(tmp_path / f"{split}.npz"), "cpu")))
        feats[split] = (torch.from_numpy(e["features"]), torch.from_numpy(e["labels"]))
    want = retrieval_metrics(*feats["test"], *feats["train"])
    assert got["precision_at_1"] == want.precision_at_1 and got["map_at_r"] == want.map_at_r
    assert got["recall_at_k"] == {str(k): v for k, v in want.recall_at_k.items()}
    assert (got["n_queries"], got["n_reference"], got["split"]) == (360, 1437, "test")

    calls.clear()
    loo = retrieval(RetrievalConfig(run_dir=str(ce_run), split="train", device="cpu"))
    assert calls == [1437]  # the training split is both: each query leaves itself out
    want = retrieval_metrics(*feats["train"], *feats["train"], exclude_self=True)
    assert loo["map_at_r"] == want.map_at_r and loo["n_queries"] == 1437

    assert main(["retrieval", str(ce_run), "--device", "cpu"]) == 0
    assert main(["retrieval", str(ce_run), "--split", "unlabeled"]) == 2


def test_knn_and_probe_also_writes_the_retrieval(ce_run):
    from contrastkit.train.config import RetrievalConfig
    from contrastkit.train.evaluate import retrieval

    knn_and_probe(ce_run, probe=ProbeConfig(run_dir=str(ce_run), epochs=1, device="cpu"))
    shared = json.loads((ce_run / "retrieval.json").read_text())
    alone = retrieval(RetrievalConfig(run_dir=str(ce_run), device="cpu"))
    assert shared["features_from"] == "knn" and "features_from" not in alone
    for key in ["precision_at_1", "recall_at_k", "map_at_r", "n_queries", "n_reference"]:
        assert shared[key] == alone[key], key


def test_retrieval_of_the_validation_split_against_the_images_trained_on(tmp_path, capsys):
    from contrastkit.cli import main
    from contrastkit.data import load_dataset
    from contrastkit.data.splits import stratified_split
    from contrastkit.train.config import EmbedConfig, RetrievalConfig
    from contrastkit.train.evaluate import embed, retrieval
    from contrastkit.train.retrieval import retrieval_metrics

    out = tmp_path / "v"
    options = {**TINY, "limit": None, "batch_size": 256}
    pretrain(PretrainConfig(data="digits", method="ce", val_fraction=0.2, out=str(out), **options))
    feats, labels = {}, {}
    for split in ("train", "val"):  # train: without the validation images; val: those
        e = np.load(embed(EmbedConfig(str(out), split, str(tmp_path / f"{split}.npz"), "cpu")))
        feats[split], labels[split] = torch.from_numpy(e["features"]), torch.from_numpy(e["labels"])
    # the validation positions recomputed from the digits labels (seed 0, 20 % per class)
    all_labels = load_dataset("digits", "train").labels
    keep, val = stratified_split(all_labels, 0.2, 0)
    assert torch.equal(labels["train"], all_labels[keep])
    assert torch.equal(labels["val"], all_labels[val])
    got = retrieval(RetrievalConfig(run_dir=str(out), split="val", device="cpu"))
    want = retrieval_metrics(feats["val"], labels["val"], feats["train"], labels["train"])
    assert (got["split"], got["n_queries"], got["n_reference"]) == ("val", 287, 1150)
    assert got["precision_at_1"] == want.precision_at_1 and got["map_at_r"] == want.map_at_r
    assert json.loads((out / "retrieval_val.json").read_text()) == got
    assert not (out / "retrieval.json").exists()
    test = retrieval(RetrievalConfig(run_dir=str(out), device="cpu"))  # the same reference
    assert (test["n_reference"], test["n_queries"]) == (1150, 360)
    assert main(["retrieval", str(out), "--split", "val", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.rstrip().endswith(f"→ {out}/retrieval_val.json")


def test_retrieval_of_a_split_val_the_run_does_not_have_is_one_line(ce_run, tmp_path, capsys):
    from contrastkit.cli import main

    assert main(["retrieval", str(ce_run), "--split", "val", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: this run has no validation split") and err.count("\n") == 1
    assert not (ce_run / "retrieval_val.json").exists()
    other = _rgb_folder(tmp_path / "rgb")
    argv = ["retrieval", str(ce_run), "--split", "val", "--data", other, "--device", "cpu"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--split val is the run's own validation split" in err and err.count("\n") == 1


def _rgb_folder(root, size=16):
    """A folder data set of RGB images (train/ and test/, two classes), unlike the digits."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 6)):
        for c, name in enumerate(["dark", "light"]):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                level = 40 + 150 * c + rng.integers(0, 40, (size, size, 3))
                Image.fromarray(level.astype(np.uint8)).save(root / split / name / f"{i}.png")
    return f"folder:{root}"


def test_transfer_to_another_data_set_is_adapted_recorded_and_kept_apart(ce_run, tmp_path):
    from contrastkit.data import resolve_dataset
    from contrastkit.data.adapt import adapt_images
    from contrastkit.data.tensor_dataset import ImageTensorDataset
    from contrastkit.train.config import RetrievalConfig
    from contrastkit.train.evaluate import retrieval

    other = _rgb_folder(tmp_path / "rgb")
    own = (ce_run / "knn.json").read_text() if (ce_run / "knn.json").exists() else None
    got = knn(KnnConfig(run_dir=str(ce_run), data=other, k=3, device="cpu"))
    adaptation = ["colour → grey (BT.601 luma)", "resized 16×16 → 8×8 (bilinear)"]
    assert got["transfer"] == {"data": other, "adaptation": adaptation}
    assert (got["n_train"], got["n_test"]) == (24, 12)
    written = [p.name for p in ce_run.glob("knn-folder*.json")]
    assert len(written) == 1 and json.loads((ce_run / written[0]).read_text()) == got
    if own is not None:
        assert (ce_run / "knn.json").read_text() == own  # the run's own result stays
    # the same numbers as the adapted images given as Dataset objects
    adapted = {}
    for split in ("train", "test"):
        ds = resolve_dataset(other, split)
        adapted[split] = ImageTensorDataset(adapt_images(ds.images, 1, 8)[0], ds.labels)
    alone = knn(
        KnnConfig(run_dir=str(ce_run), k=3, device="cpu"),
        train_data=adapted["train"],
        test_data=adapted["test"],
    )
    assert got["test_acc"] == alone["test_acc"]
    probe = linear_probe(ProbeConfig(run_dir=str(ce_run), data=other, epochs=2, device="cpu"))
    assert probe["classes"] == ["dark", "light"] and "head_test_acc" not in probe
    assert probe["transfer"]["adaptation"] == adaptation
    found = retrieval(RetrievalConfig(run_dir=str(ce_run), data=other, device="cpu"))
    assert found["n_reference"] == 24 and found["transfer"]["data"] == other
    with pytest.raises(ContrastkitError, match="either as data="):
        knn(KnnConfig(run_dir=str(ce_run), data=other), train_data=adapted["train"])


def test_transfer_streams_a_prepared_shard_directory_as_the_folder_it_came_from(ce_run, tmp_path):
    from contrastkit.data import resolve_dataset
    from contrastkit.data.prepare import prepare
    from contrastkit.train.config import RetrievalConfig
    from contrastkit.train.evaluate import retrieval

    folder = _rgb_folder(tmp_path / "rgb")
    prepare(folder, tmp_path / "sh", shard_size=5, workers=1, quiet=True)  # several shards
    shards = f"shards:{tmp_path / 'sh'}"
    for split in ("train", "test"):  # the same images in the same order
        assert torch.equal(
            resolve_dataset(shards, split).labels, resolve_dataset(folder, split).labels
        )
    results = {}
    for data in (folder, shards):  # the folder adapted in memory, the shards batch by batch
        results[data] = (
            knn(KnnConfig(run_dir=str(ce_run), data=data, k=3, device="cpu")),
            linear_probe(ProbeConfig(run_dir=str(ce_run), data=data, epochs=2, device="cpu")),
            retrieval(RetrievalConfig(run_dir=str(ce_run), data=data, device="cpu")),
        )
    for mine, theirs in zip(results[shards], results[folder], strict=True):
        assert mine["transfer"] == {**theirs["transfer"], "data": shards}
        for key in ("test_acc", "train_acc", "confusion", "precision_at_1", "map_at_r"):
            assert mine.get(key) == theirs.get(key), key
    assert results[shards][0]["transfer"]["adaptation"] == [
        "colour → grey (BT.601 luma)",
        "resized 16×16 → 8×8 (bilinear)",
    ]
    assert len(list(ce_run.glob("knn-shards*.json"))) == 1
