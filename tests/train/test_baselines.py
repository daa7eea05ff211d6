"""Raw-pixel baselines: the retrieval on pixels equals retrieval_metrics on the pixel vectors."""

import pytest

from contrastkit.data import load_dataset
from contrastkit.data.splits import stratified_split
from contrastkit.train.baselines import raw_pixel_baselines
from contrastkit.train.report import format_table
from contrastkit.train.retrieval import retrieval_metrics


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train"), load_dataset("digits", "test")


def _pixels(split):
    return split.images.reshape(len(split), -1).double()  # (N, 64), the stored uint8 values


@pytest.mark.parametrize("val_fraction", [0.0, 0.2])
def test_pixel_retrieval_ranks_the_test_split_against_the_images_a_run_trains_on(
    digits, val_fraction
):
    train, test = digits
    got = raw_pixel_baselines(train, test, val_fraction=val_fraction)["retrieval"]
    keep = stratified_split(train.labels, val_fraction, 0)[0]  # all 1,437 when 0
    want = retrieval_metrics(_pixels(test), test.labels, _pixels(train)[keep], train.labels[keep])
    assert got["n_reference"] == len(keep) == (1437 if val_fraction == 0 else 1150)
    assert got["precision_at_1"] == pytest.approx(want.precision_at_1, abs=1e-12)
    assert got["map_at_r"] == pytest.approx(want.map_at_r, abs=1e-12)
    assert (got["n_queries"], got["lone_queries"]) == (360, 0)
    assert 0.9 < got["precision_at_1"] <= 1  # digits' pixels: the nearest image is mostly right


@pytest.mark.parametrize("val_fraction", [0.0, 0.2])
def test_pixel_classifiers_train_on_the_images_a_run_trains_on(digits, val_fraction):
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    train, test = digits
    base = raw_pixel_baselines(train, test, val_fraction=val_fraction)
    keep = stratified_split(train.labels, val_fraction, 0)[0]
    x, y = _pixels(train)[keep].numpy() / 255.0, train.labels[keep].numpy()
    xte, yte = _pixels(test).numpy() / 255.0, test.labels.numpy()
    logreg = (LogisticRegression(max_iter=1000).fit(x, y).predict(xte) == yte).mean()
    knn = (KNeighborsClassifier(n_neighbors=5).fit(x, y).predict(xte) == yte).mean()
    assert base["n_train"] == len(keep) == (1437 if val_fraction == 0 else 1150)
    assert (base["logreg"], base["knn"]) == (float(logreg), float(knn))


def test_pixel_retrieval_over_the_memory_budget_is_skipped_with_the_reason(digits, monkeypatch):
    import contrastkit.train.baselines as baselines

    # digits: (1,437 + 360) vectors of 64 float32 values, twice: 920,064 bytes
    monkeypatch.setattr(baselines, "RETRIEVAL_BYTES", 920_063)
    base = raw_pixel_baselines(*digits)
    assert "retrieval" not in base and base["logreg"] > 0.9
    assert base["retrieval_skipped"] == (
        "1437 + 360 pixel vectors of 64 values need 0.0 GiB, over the 0 GiB budget"
    )
    monkeypatch.setattr(baselines, "RETRIEVAL_BYTES", 920_064)
    assert "retrieval" in raw_pixel_baselines(*digits)


def test_the_results_table_shows_the_pixel_retrieval_beside_the_methods(digits):
    base = raw_pixel_baselines(*digits)
    row = {"method": "ce", "model": "small_cnn", "epochs": 1, "seconds": 1.0}
    row.update({"cpu_seconds": 1.0, "knn_acc": 0.5, "probe_acc": 0.5, "head_acc": None})
    lines = format_table([{**row, "precision_at_1": 0.9, "map_at_r": 0.8}], base).splitlines()
    found = base["retrieval"]
    assert lines[-1] == (
        "| raw pixels: cosine retrieval |"
        + " – |" * 8
        + f" {100 * found['precision_at_1']:.1f} | {100 * found['map_at_r']:.1f} |"
    )
    assert all(line.count("|") == lines[0].count("|") for line in lines)
    plain = format_table([row], base)  # no method has retrieval: no columns, no row
    assert "cosine retrieval" not in plain
    older = {k: v for k, v in base.items() if k != "retrieval"}  # written before it existed
    assert "cosine retrieval" not in format_table([{**row, "precision_at_1": 0.9}], older)


def test_bad_val_fraction_is_one_line(digits):
    with pytest.raises(ValueError, match=r"val_fraction must be a number in \[0, 1\), got 1.0"):
        raw_pixel_baselines(*digits, val_fraction=1.0)
