"""``contrastkit prepare`` and ``shards:DIR``: the shards against the webdataset library and the
in-memory data set, determinism, bit-equal training, and the errors of bad shards and images."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bit_equal import assert_bit_equal
from contrastkit.data import load_dataset
from contrastkit.data.prepare import prepare
from contrastkit.data.shards import ShardSplit, batch_loader, iter_images
from contrastkit.errors import ContrastkitError

SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture(scope="module")
def digits_shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards") / "digits"
    prepare("digits", out, shard_size=400, workers=2, quiet=True)
    return out


@pytest.mark.parametrize("split", ["train", "test"])
def test_webdataset_reads_the_source_images_and_labels_in_key_order(digits_shards, split):
    import webdataset as wds

    urls = sorted(str(p) for p in (digits_shards / split).glob("*.tar"))
    samples = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False))
    source = load_dataset("digits", split)
    assert len(samples) == len(source) and len(urls) == -(-len(source) // 400)
    assert [s["__key__"] for s in samples] == [f"{i:09d}" for i in range(len(source))]
    images = np.stack([np.load(io.BytesIO(s["npy"])) for s in samples])
    labels = [int(s["cls"]) for s in samples]
    assert images.dtype == np.uint8 and np.array_equal(images, source.images.numpy())
    assert labels == source.labels.tolist()


def test_reader_equals_the_source_in_any_order_and_through_workers(digits_shards):
    source = load_dataset("digits", "train")
    shards = ShardSplit(digits_shards, "train")
    assert torch.equal(shards.labels, source.labels) and shards.classes == source.classes
    order = torch.randperm(len(source), generator=torch.Generator().manual_seed(0))
    batches = list(order[:1000].split(77))
    read = list(batch_loader(shards, batches, workers=2))
    assert len(read) == len(batches)
    for (x, y), idx in zip(read, batches, strict=True):
        assert torch.equal(x, source.images[idx]) and torch.equal(y, source.labels[idx])
    assert torch.equal(torch.cat(list(iter_images(shards, 512, workers=0))), source.images)


def test_same_source_gives_byte_identical_shards_and_index(digits_shards, tmp_path):
    again = tmp_path / "again"
    prepare("digits", again, shard_size=400, workers=1, quiet=True)
    names = sorted(p.relative_to(digits_shards) for p in digits_shards.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for name in names:
        assert (digits_shards / name).read_bytes() == (again / name).read_bytes(), name


def test_pretrain_on_shards_equals_pretrain_in_memory_bit_for_bit(digits_shards, tmp_path):
    from contrastkit.train.checkpoint import load_checkpoint
    from contrastkit.train.config import PretrainConfig
    from contrastkit.train.pretrain import pretrain

    kw = {"epochs": 1, "batch_size": 128, "warmup_epochs": 0.5, "device": "cpu", "quiet": True}
    mem = pretrain(PretrainConfig(data="digits", out=str(tmp_path / "mem"), seed=5, **kw))
    data = f"shards:{digits_shards}"
    shard = pretrain(PretrainConfig(data=data, out=str(tmp_path / "sh"), seed=5, workers=2, **kw))
    a = load_checkpoint(tmp_path / "mem" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "sh" / "checkpoints" / "last.pt")
    for part in ("encoder", "head", "optimizer", "rng"):
        assert_bit_equal(a[part], b[part], part)
    assert a["data"] == b["data"]  # the same mean and std, classes, shape
    assert (mem.loss, mem.knn_acc) == (shard.loss, shard.knn_acc)


def test_a_directory_that_is_not_prepared_says_how_to_make_one(tmp_path):
    with pytest.raises(ContrastkitError) as info:
        ShardSplit(tmp_path, "train")
    assert str(info.value) == (
        f"shards:{tmp_path} is not a prepared directory (no index.json); make one with "
        f"`contrastkit prepare SOURCE --out {tmp_path}` (SOURCE: a data set name or folder:PATH)"
    )


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_missing_truncated_or_shortened_shards_are_named(digits_shards, tmp_path):
    missing = _copy(digits_shards, tmp_path / "missing")
    (missing / "train" / "shard-000002.tar").unlink()
    with pytest.raises(ContrastkitError, match=r"^shard .*train/shard-000002.tar is missing"):
        ShardSplit(missing, "train")
    cut = _copy(digits_shards, tmp_path / "cut")
    shard = cut / "train" / "shard-000001.tar"
    os.truncate(shard, shard.stat().st_size - 5000)
    with pytest.raises(ContrastkitError, match=r"^shard .*shard-000001.tar has \d+ bytes, the"):
        ShardSplit(cut, "train")
    # cut after opening (a file changed under a running job): the short read names the shard
    late = _copy(digits_shards, tmp_path / "late")
    split = ShardSplit(late, "train")
    os.truncate(late / "train" / "shard-000003.tar", 1024)
    with pytest.raises(ContrastkitError, match=r"^shard .*shard-000003.tar is truncated: sample"):
        split.read([0, 1300])


def _folder(root: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(6):
            arr = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / c / f"{i}.png")
    return root


def test_a_corrupt_image_is_named_or_skipped_and_listed(tmp_path):
    folder = _folder(tmp_path / "imgs")
    bad = folder / "b" / "3.png"
    bad.write_bytes(bad.read_bytes()[:60])  # a PNG cut short: its header reads, its pixels do not
    with pytest.raises(ContrastkitError, match=f"^{bad}: not a readable image"):
        prepare(f"folder:{folder}", tmp_path / "out", quiet=True)
    index = prepare(f"folder:{folder}", tmp_path / "skip", skip_bad=True, quiet=True)
    skipped = index["splits"]["train"]["skipped"] + index["splits"]["test"]["skipped"]
    assert skipped == [str(bad)]
    assert index["splits"]["train"]["count"] + index["splits"]["test"]["count"] == 11
    reference = load_dataset(f"folder:{_folder(tmp_path / 'good')}", "test")
    shards = ShardSplit(tmp_path / "skip", "test")
    assert shards.image_shape == reference.image_shape == (3, 10, 12)


def test_an_interrupted_prepare_is_completed_by_a_rerun(digits_shards, tmp_path):
    out = _copy(digits_shards, tmp_path / "part")
    (out / "index.json").unlink()  # killed before the index: shard 1 half written, 2 not yet
    (out / "train" / "shard-000001.tar").rename(out / "train" / ".shard-000001.tar.ab12.tmp")
    for p in (out / "train").glob("shard-000002.*"):
        p.unlink()
    with pytest.raises(ContrastkitError, match="not a prepared directory"):
        ShardSplit(out, "train")
    prepare("digits", out, shard_size=400, quiet=True)
    assert not list(out.rglob(".*.tmp"))
    for p in digits_shards.rglob("*"):
        if p.is_file():
            assert (out / p.relative_to(digits_shards)).read_bytes() == p.read_bytes(), p.name
    with pytest.raises(ContrastkitError, match="is already prepared"):
        prepare("digits", out, shard_size=400, quiet=True)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ContrastkitError, match="not an interrupted prepare with these options"):
        prepare("digits", other, quiet=True)
    assert [p.name for p in other.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"shard_size": 0}, "--shard-size (shard_size) must be an integer >= 1, got 0"),
        ({"encoding": "jpg"}, "unknown encoding 'jpg' for --encoding (encoding)"),
        ({"workers": 0}, "--workers (workers) must be an integer >= 1, got 0"),
        ({"limit": 1}, "--limit (limit) must be an integer >= 2, got 1"),
        ({"source": "mnist"}, "unknown data set 'mnist'"),
        ({"source": "shards:/x"}, "source 'shards:/x' is already prepared shards"),
    ],
)
def test_bad_options_fail_before_anything_is_written(tmp_path, kwargs, message):
    source = kwargs.pop("source", "digits")
    with pytest.raises(
        ContrastkitError, match=f"^{message}".replace("(", r"\(").replace(")", r"\)")
    ):
        prepare(source, tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_cli_prepare_then_pretrain_on_the_shards(tmp_path):
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "sh"
    done = subprocess.run(
        [sys.executable, "-m", "contrastkit", "prepare", "digits", "--out", str(out), "--quiet"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert f"train with: contrastkit run --data shards:{out}" in done.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "contrastkit", "pretrain", "--data", f"shards:{tmp_path}"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert bad.stderr.startswith(f"error: shards:{tmp_path} is not a prepared directory")


# --encoding png: the same pixels as raw, real PNG members, the same training


class _RGB(torch.utils.data.Dataset):
    """Random RGB uint8 images (3, 16, 16) with labels 0..3, seeded."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randint(0, 256, (n, 3, 16, 16), generator=g, dtype=torch.uint8)
        self.labels = torch.arange(n) % 4
        self.classes = ["a", "b", "c", "d"]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])


@pytest.fixture(scope="module")
def png_sets(tmp_path_factory, digits_shards):
    """Grey (digits) and RGB sets prepared raw and png: {kind: (raw dir, png dir, source)}."""
    root = tmp_path_factory.mktemp("png")
    grey_png = root / "grey-png"
    prepare("digits", grey_png, shard_size=400, encoding="png", workers=2, quiet=True)
    rgb, rgb_test = _RGB(130, 0), _RGB(20, 1)
    sets = {"grey": (digits_shards, grey_png, load_dataset("digits", "train"))}
    for enc in ("raw", "png"):
        prepare(
            rgb, root / f"rgb-{enc}", test_data=rgb_test, shard_size=50, encoding=enc, quiet=True
        )
    sets["rgb"] = (root / "rgb-raw", root / "rgb-png", rgb)
    return sets


@pytest.mark.parametrize("kind", ["grey", "rgb"])
def test_png_shards_decode_to_the_raw_pixels_through_the_reader_and_workers(png_sets, kind):
    raw_dir, png_dir, source = png_sets[kind]
    raw, png = ShardSplit(raw_dir, "train"), ShardSplit(png_dir, "train")
    assert png.encoding == "png" and raw.encoding == "raw"
    assert png.image_shape == raw.image_shape == tuple(source.images.shape[1:])
    assert (png.mean, png.std, png.classes) == (raw.mean, raw.std, raw.classes)
    assert torch.equal(png.labels, source.labels)
    order = torch.randperm(len(png), generator=torch.Generator().manual_seed(1))
    batches = list(order.split(37))
    for (x, y), idx in zip(batch_loader(png, batches, workers=2), batches, strict=True):
        assert x.dtype == torch.uint8 and torch.equal(x, source.images[idx])
        assert torch.equal(x, raw.read(idx)) and torch.equal(y, source.labels[idx])
    assert torch.equal(torch.cat(list(iter_images(png, 64))), source.images)


@pytest.mark.parametrize("kind", ["grey", "rgb"])
def test_png_members_are_real_png_files_that_pil_and_webdataset_decode(png_sets, kind):
    import tarfile

    import webdataset as wds
    from PIL import Image

    _, png_dir, source = png_sets[kind]
    urls = sorted(str(p) for p in (png_dir / "train").glob("*.tar"))
    with tarfile.open(urls[0]) as tf:
        names = tf.getnames()
        first = tf.extractfile(names[0]).read()  # type: ignore[union-attr]
    assert names[:2] == ["000000000.png", "000000000.cls"]
    assert first[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(first)) as im:
        assert im.format == "PNG" and im.mode == ("L" if kind == "grey" else "RGB")
        pixels = np.asarray(im)
    hwc = source.images.numpy().transpose(0, 2, 3, 1)  # (N, H, W, C), as decoders give
    assert np.array_equal(pixels, hwc[0, :, :, 0] if kind == "grey" else hwc[0])
    decoded = list(
        wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode(
            "l8" if kind == "grey" else "rgb8"
        )
    )
    assert [s["__key__"] for s in decoded] == [f"{i:09d}" for i in range(len(source))]
    images = np.stack([s["png"] for s in decoded])  # (N, H, W) grey, (N, H, W, 3) RGB
    assert images.dtype == np.uint8
    assert np.array_equal(images, hwc[..., 0] if kind == "grey" else hwc)
    assert [int(s["cls"]) for s in decoded] == source.labels.tolist()


def _step_losses(run: Path) -> list[tuple[int, float]]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in records if r["kind"] == "step"]


@pytest.mark.parametrize("kind", ["grey", "rgb"])
def test_pretrain_on_png_shards_gives_the_losses_of_raw_shards(png_sets, tmp_path, kind):
    from contrastkit.train.config import PretrainConfig
    from contrastkit.train.pretrain import pretrain

    raw_dir, png_dir, _ = png_sets[kind]
    kw = {"batch_size": 32, "epochs": 2, "warmup_epochs": 0.5, "max_steps": 6, "knn_k": 20}
    kw |= {"knn_every": 0, "device": "cpu", "quiet": True, "seed": 3, "workers": 2}
    runs = {}
    for name, d in (("raw", raw_dir), ("png", png_dir)):
        runs[name] = pretrain(PretrainConfig(data=f"shards:{d}", out=str(tmp_path / name), **kw))
    losses = _step_losses(tmp_path / "png")
    assert [s for s, _ in losses] == list(range(1, 7))
    assert losses == _step_losses(tmp_path / "raw")
    assert runs["png"].knn_acc == runs["raw"].knn_acc


class _Images(torch.utils.data.Dataset):
    """The given uint8 images (N, C, H, W) (or a list of differently shaped ones), labels i % 2."""

    def __init__(self, images) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], i % 2


@pytest.mark.parametrize("channels", [2, 4])
def test_png_keeps_grey_alpha_and_rgba_images(tmp_path, channels):
    g = torch.Generator().manual_seed(channels)
    images = torch.randint(0, 256, (12, channels, 6, 5), generator=g, dtype=torch.uint8)
    index = prepare(_Images(images), tmp_path / "p", encoding="png", workers=1, quiet=True)
    assert index["image_shape"] == [channels, 6, 5]
    assert torch.equal(ShardSplit(tmp_path / "p", "train").read(range(12)), images)


def test_png_refuses_more_than_four_channels_before_anything_is_written(tmp_path):
    images = torch.zeros(4, 5, 6, 6, dtype=torch.uint8)
    with pytest.raises(ContrastkitError) as info:
        prepare(_Images(images), tmp_path / "p", encoding="png", quiet=True)
    assert str(info.value) == (
        "--encoding (encoding) png stores images of 1 to 4 channels, got 5 (data[0] is "
        "(5, 6, 6)): use --encoding raw"
    )
    assert not (tmp_path / "p").exists()
    prepare(_Images(images), tmp_path / "raw", encoding="raw", workers=1, quiet=True)


@pytest.mark.parametrize("encoding", ["raw", "png"])
def test_an_image_of_another_shape_is_named(tmp_path, encoding):
    images = [torch.zeros(3, 8, 8, dtype=torch.uint8)] * 5 + [
        torch.zeros(3, 8, 9, dtype=torch.uint8)
    ]
    with pytest.raises(ContrastkitError) as info:
        prepare(_Images(images), tmp_path / "p", encoding=encoding, workers=2, shard_size=3)
    assert str(info.value) == (
        "data[5]: image of shape (3, 8, 9), but data[0] has (3, 8, 8): every image of a split "
        "must have one shape"
    )
    assert not (tmp_path / "p" / "index.json").exists()


def test_a_prepared_folder_has_the_statistics_of_the_folder_in_memory(tmp_path):
    from contrastkit.data import channel_stats

    folder = _folder(tmp_path / "imgs")
    index = prepare(f"folder:{folder}", tmp_path / "out", shard_size=4, workers=2, quiet=True)
    in_memory = load_dataset(f"folder:{folder}", "train")
    assert len(index["splits"]["train"]["shards"]) == 3  # sums over several shards
    assert (index["mean"], index["std"]) == channel_stats(in_memory.images)
    # the shards' own sums are JSON integers, equal to the pixels' sums by numpy in int64
    shards = sorted((tmp_path / "out" / "train").glob("*.json"))
    summaries = [json.loads(p.read_text()) for p in shards]
    assert len(summaries) == 3
    pixels = in_memory.images.numpy().astype(np.int64)  # (12, 3, 10, 12)
    for key, want in (("pixel_sum", pixels), ("pixel_sumsq", pixels * pixels)):
        assert all(type(v) is int for s in summaries for v in s[key])  # not floats
        got = [sum(s[key][c] for s in summaries) for c in range(3)]
        assert got == want.sum(axis=(0, 2, 3)).tolist()
