"""faiss index and search of a run's training features against a brute-force torch search."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from contrastkit.cli import main
from contrastkit.data import resolve_dataset
from contrastkit.errors import ContrastkitError, ContrastkitWarning
from contrastkit.train.config import EmbedConfig, IndexConfig, PretrainConfig, SearchConfig
from contrastkit.train.evaluate import embed
from contrastkit.train.pretrain import pretrain
from contrastkit.train.search import Neighbour, build_index, found_neighbours, search

faiss = pytest.importorskip("faiss")
Image = pytest.importorskip("PIL.Image")

TINY = {"limit": 64, "batch_size": 32, "epochs": 1, "quiet": True, "knn_k": 10, "device": "cpu"}


def _pretrain(root, seed):
    out = root / f"simclr-s{seed}"
    pretrain(PretrainConfig(data="digits", method="simclr", out=str(out), seed=seed, **TINY))
    return out


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """A tiny run, its exact index, and `embed`'s unit train and test features."""
    root = tmp_path_factory.mktemp("search")
    run = _pretrain(root, 0)
    build_index(IndexConfig(run_dir=str(run), device="cpu"))
    feats = {}
    for split in ("train", "test"):
        e = np.load(embed(EmbedConfig(str(run), split, str(root / f"{split}.npz"), "cpu")))
        feats[split] = F.normalize(torch.from_numpy(e["features"]), dim=1)
    return run, feats


def _brute_force(feats, queries, k):
    sims = queries @ feats["train"].T  # (N, M)
    return sims.topk(k, dim=1)


def test_exact_index_equals_a_brute_force_torch_search(indexed):
    run, feats = indexed
    index = faiss.read_index(str(run / "index" / "index.faiss"))
    info = json.loads((run / "index" / "index.json").read_text())
    assert (index.ntotal, info["size"], info["kind"]) == (1437, 1437, "exact (flat inner product)")
    sims, ids = index.search(feats["test"].numpy(), 10)
    want = _brute_force(feats, feats["test"], 11)  # one more: a tie with the 11th decides
    np.testing.assert_allclose(sims, want.values.numpy()[:, :10], rtol=0, atol=1e-5)
    # the same neighbours, wherever the similarities are not tied to float32 precision
    # (the digits hold duplicate images: their features tie exactly)
    apart = np.abs(np.diff(want.values.numpy(), axis=1)) > 1e-5  # (N, 10): i vs i + 1
    clear = apart & np.concatenate([np.ones((len(apart), 1), bool), apart[:, :-1]], axis=1)
    assert clear.mean() > 0.8  # a 1-epoch encoder packs its features close together
    np.testing.assert_array_equal(ids[clear], want.indices.numpy()[:, :10][clear])
    labels = np.load(run / "index" / "labels.npz")
    assert labels["labels"].tolist() == resolve_dataset("digits", "train").labels.tolist()


def _png(path, array):
    Image.fromarray(array).save(path)
    return str(path)


def test_search_finds_the_neighbours_of_image_files(indexed, tmp_path, capsys):
    run, feats = indexed
    test = resolve_dataset("digits", "test").images  # (360, 1, 8, 8)
    paths = [_png(tmp_path / f"q{i}.png", test[i, 0].numpy()) for i in range(3)]
    cfg = SearchConfig(run_dir=str(run), k=4, out=str(tmp_path / "grid.png"), device="cpu")
    found = search(cfg, paths)  # grey 8×8 PNGs: no conversion, no warning
    want = _brute_force(feats, feats["test"][:3], 4)
    assert [[n.id for n in row] for row in found] == want.indices.tolist()
    sims = [[n.similarity for n in row] for row in found]
    np.testing.assert_allclose(sims, want.values.numpy(), rtol=0, atol=1e-5)
    train_labels = resolve_dataset("digits", "train").labels
    assert [n.label for n in found[0]] == train_labels[want.indices[0]].tolist()
    assert Image.open(tmp_path / "grid.png").size[0] > 0
    assert main(["search", str(run), *paths[:1], "-k", "2", "--out", str(tmp_path / "g.png")]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == paths[0] and printed[1].startswith(f"  id {want.indices[0, 0]:>6}")


def test_other_images_are_converted_with_a_note_and_bad_ones_refused(indexed, tmp_path):
    run, _ = indexed
    cfg = SearchConfig(run_dir=str(run), k=1, out=str(tmp_path / "g.png"), device="cpu")
    rgb = _png(tmp_path / "rgb.png", np.full((16, 12, 3), 200, np.uint8))
    with pytest.warns(ContrastkitWarning, match=r"colour → grey .*; resized 16×12 → 8×8"):
        search(cfg, [rgb])
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ContrastkitError, match=r"text.png: not a readable image"):
        search(cfg, [str(tmp_path / "text.png")])
    with pytest.raises(ContrastkitError, match=r"image .*missing.png not found"):
        search(cfg, [str(tmp_path / "missing.png")])


def test_an_index_of_another_run_is_refused(indexed, tmp_path, capsys):
    run, _ = indexed
    other = _pretrain(tmp_path, 1)
    png = _png(tmp_path / "q.png", np.zeros((8, 8), np.uint8))
    args = ["search", str(other), png, "--index", str(run / "index"), "--device", "cpu"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: the index in {run / 'index'} was built from {run}")
    assert err.count("\n") == 1 and not (tmp_path / "search.png").exists()
    assert main(["search", str(other), png, "--device", "cpu"]) == 2  # none built for it
    assert "no index in" in capsys.readouterr().err


def test_approximate_index_finds_nearly_the_exact_neighbours(indexed, tmp_path):
    run, feats = indexed
    out = build_index(IndexConfig(run_dir=str(run), out=str(tmp_path / "hnsw"), approximate=True))
    index = faiss.read_index(str(out / "index.faiss"))
    _, ids = index.search(feats["test"].numpy(), 1)
    exact = _brute_force(feats, feats["test"], 1).indices.numpy()
    assert (ids == exact).mean() > 0.95  # HNSW is approximate by design
    assert json.loads((out / "index.json").read_text())["kind"].startswith("hnsw")


@pytest.fixture(scope="module")
def indexed_val(tmp_path_factory):
    """A tiny run with --val-fraction 0.1, its exact index, and `embed`'s unit train features."""
    root = tmp_path_factory.mktemp("search-val")
    run = root / "simclr-val"
    cfg = PretrainConfig(data="digits", method="simclr", out=str(run), val_fraction=0.1, **TINY)
    pretrain(cfg)
    build_index(IndexConfig(run_dir=str(run), device="cpu"))
    e = np.load(embed(EmbedConfig(str(run), "train", str(root / "train.npz"), "cpu")))
    return run, F.normalize(torch.from_numpy(e["features"]), dim=1)


def test_the_index_leaves_the_validation_images_out_as_retrieval_does(indexed_val, tmp_path):
    run, train = indexed_val  # embed's train split: without the validation images
    index = faiss.read_index(str(run / "index" / "index.faiss"))
    info = json.loads((run / "index" / "index.json").read_text())
    # digits: 1,437 training images, 142 of them validation at 0.1 (docs/results.md)
    assert (index.ntotal, info["size"], info["validation_left_out"]) == (1295, 1295, 142)
    rows = index.reconstruct_n(0, index.ntotal)  # (1295, F)
    np.testing.assert_allclose(rows, train.numpy(), rtol=0, atol=1e-5)  # row for row
    stored = np.load(run / "index" / "labels.npz")
    ids = stored["ids"]  # positions in the whole training split
    assert len(ids) == 1295 and bool((np.diff(ids) > 0).all()) and 0 <= ids[0] and ids[-1] < 1437
    full = resolve_dataset("digits", "train")
    assert stored["labels"].tolist() == full.labels[torch.from_numpy(ids)].tolist()
    held_out = sorted(set(range(1437)) - set(ids.tolist()))
    queries = [int(ids[700]), held_out[0]]  # an indexed image, a validation image
    paths = [_png(tmp_path / f"q{i}.png", full.images[i, 0].numpy()) for i in queries]
    cfg = SearchConfig(run_dir=str(run), k=5, out=str(tmp_path / "grid.png"), device="cpu")
    found = search(cfg, paths)
    for row in found:  # indexed ids only (the validation query too), each with its label
        assert all(n.id in set(ids.tolist()) and n.label == int(full.labels[n.id]) for n in row)
    # the indexed image's neighbours: their similarities are those of their rows in embed's
    # features (a row taken for an id would give others), itself (or a duplicate) first
    at = [int(np.searchsorted(ids, n.id)) for n in found[0]]
    want = (train[at] @ train[700]).numpy()  # (5,)
    np.testing.assert_allclose([n.similarity for n in found[0]], want, rtol=0, atol=1e-5)
    assert found[0][0].similarity == pytest.approx(1, abs=1e-5)


def test_cli_index_says_how_many_validation_images_it_left_out(indexed_val, tmp_path, capsys):
    run, train = indexed_val
    out = tmp_path / "again"
    assert main(["index", str(run), "--out", str(out), "--device", "cpu"]) == 0
    assert capsys.readouterr().out == (
        f"wrote {out}: 1295 training images × {train.shape[1]} features, exact (flat inner "
        "product); 142 validation images left out\n"
    )


def test_rows_faiss_pads_with_minus_one_are_dropped_not_read_as_the_last_image():
    """faiss pads with row -1 when it finds fewer than k; ids[-1] would be a wrong neighbour."""
    vecs = np.eye(3, 4, dtype=np.float32)  # 3 unit vectors, dimension 4
    index = faiss.IndexFlatIP(4)
    index.add(vecs)
    query = np.array([[0.8, 0.6, 0.0, 0.0]], dtype=np.float32)
    sims, hits = index.search(query, 5)  # k = 5 > 3 rows: faiss pads two entries with -1
    assert (hits[0, 3:] == -1).all()  # the padding this guards against, from faiss itself
    labels, ids = np.array([7, 8, 9]), np.array([100, 200, 300])
    found = found_neighbours(sims, hits, labels, ids)
    expected = [Neighbour(100, 7, 0.8), Neighbour(200, 8, 0.6), Neighbour(300, 9, 0.0)]
    assert [(n.id, n.label) for n in found[0]] == [(n.id, n.label) for n in expected]
    assert [n.similarity for n in found[0]] == pytest.approx([0.8, 0.6, 0.0], abs=1e-6)
