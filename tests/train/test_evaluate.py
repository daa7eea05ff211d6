import json

import numpy as np
import pytest

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
