"""``contrastkit prepare``: write a data set once as WebDataset tar shards (``shards:DIR``).

Format and layout: :mod:`contrastkit.data.shards`. Shards are written by ``workers`` processes,
one shard per task, each atomically (a temporary name, then a rename): the ``.tar`` appears
last, after its ``.idx.npy`` and its ``.json`` summary, so a shard that is there is complete.
``index.json`` is written when every shard is, so a directory with an index is whole; an
interrupted ``prepare`` rerun with the same options completes it (keeping the shards written).
Shards are deterministic: members sorted by key, mtime 0, uid/gid 0, no user names — the same
source gives byte-identical shards.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import secrets
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor
from torch.utils.data import Dataset

from contrastkit.data.folder import BadImage, decode_image, list_folder
from contrastkit.data.registry import FOLDER_PREFIX, dataset_info, load_dataset
from contrastkit.data.shards import (
    EXTENSIONS,
    FORMAT,
    INDEX,
    PREFIX,
    VERSION,
    npy_header_bytes,
)
from contrastkit.data.tensor_dataset import (
    UNLABELLED,
    ImageTensorDataset,
    limit_indices,
    to_uint8_images,
)
from contrastkit.errors import ContrastkitError
from contrastkit.train.files import write_atomic, write_json

MANIFEST = "prepare.json"
"""The options of the ``prepare`` that writes a directory (a rerun must give the same)."""

PNG_CHANNELS = (1, 2, 3, 4)
"""The channel counts a PNG stores: grey (L), grey and alpha (LA), RGB, RGBA."""


@dataclass
class _Source:
    """One split to write: ``get(i)`` → (uint8 (C, H, W) array, label); ``where(i)`` names it."""

    n: int
    classes: list[str]
    get: Callable[[int], tuple[np.ndarray, int]]
    where: Callable[[int], str]
    stats: tuple[list[float], list[float]] | None = None  # exact in-memory figures, if known
    bad: list[str] = field(default_factory=list)
    shape: tuple[int, ...] | None = None  # every image's (C, H, W), once checked (_check_shapes)


_SOURCES: dict[str, _Source] = {}
"""The splits being written, read by the forked writer processes."""


def _memory_source(images: Tensor, labels: Tensor, classes: list[str], name: str) -> _Source:
    from contrastkit.data.augment import channel_stats

    arr, lab = images.numpy(), labels.tolist()
    stats = channel_stats(images) if len(images) else None
    return _Source(len(arr), classes, lambda i: (arr[i], lab[i]), lambda i: f"{name}[{i}]", stats)


def _registry_source(name: str, split: str, limit: int | None, kw: dict[str, Any]) -> _Source:
    ds = load_dataset(name, split, **kw)
    assert isinstance(ds, ImageTensorDataset)  # a registry name loads into memory
    if limit is not None and split == "train" and limit < len(ds):
        ds = ds.subset(limit_indices(len(ds), limit))
    return _memory_source(ds.images, ds.labels, ds.classes, ds.name)


def _folder_source(
    path: Path, split: str, size: int | None, limit: int | None, skip_bad: bool
) -> _Source:
    bad: list[str] | None = [] if skip_bad else None
    part = list_folder(path, split, size, bad=bad)
    files, labels = part.files, part.labels
    if limit is not None and split == "train" and limit < len(files):
        keep = limit_indices(len(files), limit).tolist()
        files, labels = [files[i] for i in keep], [labels[i] for i in keep]
    bad_set = set(bad or [])
    kept = [(f, y) for f, y in zip(files, labels, strict=True) if f not in bad_set]
    grey, target = part.grey, part.target
    return _Source(
        len(kept),
        part.classes,
        lambda i: (decode_image(kept[i][0], grey, target), kept[i][1]),
        lambda i: kept[i][0],
        bad=sorted(bad_set & set(files)),
    )


def _object_source(data: Dataset[tuple[Tensor, int]], name: str) -> _Source:
    def get(i: int) -> tuple[np.ndarray, int]:
        item = data[i]
        if not isinstance(item, tuple | list) or len(item) != 2 or not isinstance(item[0], Tensor):
            raise ContrastkitError(f"{name}[{i}] must be (image tensor (C, H, W), label)")
        img = item[0].unsqueeze(0) if item[0].ndim == 2 else item[0]
        label = UNLABELLED if item[1] is None else int(item[1])
        return to_uint8_images(img).numpy(), label

    n = len(data)  # type: ignore[arg-type]
    classes = getattr(data, "classes", None)
    return _Source(n, list(classes) if classes is not None else [], get, lambda i: f"{name}[{i}]")


def _sources(
    source: str | Dataset[tuple[Tensor, int]],
    test_source: Dataset[tuple[Tensor, int]] | None,
    opts: dict[str, Any],
) -> dict[str, _Source]:
    limit, size = opts["limit"], opts["image_size"]
    if not isinstance(source, str):
        out = {"train": _object_source(source, "data")}
        if test_source is not None:
            out["test"] = _object_source(test_source, "test_data")
        if limit is not None and limit < out["train"].n:
            keep, inner = limit_indices(out["train"].n, limit).tolist(), out["train"]
            out["train"] = _Source(
                limit, inner.classes, lambda i: inner.get(keep[i]), lambda i: inner.where(keep[i])
            )
        return out
    if source.startswith(FOLDER_PREFIX):
        path = Path(source[len(FOLDER_PREFIX) :])
        return {
            s: _folder_source(path, s, size, limit, opts["skip_bad"]) for s in ("train", "test")
        }
    kw = {"root": opts["data_root"], "download": opts["download"], "image_size": size}
    return {s: _registry_source(source, s, limit, kw) for s in ("train", "test")}


def _check_source(source: object) -> None:
    if isinstance(source, str):
        if source.startswith(PREFIX):
            raise ContrastkitError(f"source {source!r} is already prepared shards")
        dataset_info(source)  # an unknown name fails here, listing the known ones
    elif not hasattr(source, "__getitem__") or not hasattr(source, "__len__"):
        raise ContrastkitError(
            f"source must be a data set name, folder:PATH or a Dataset, got {type(source).__name__}"
        )


def _open_out(out: Path, manifest: dict[str, Any]) -> None:
    """Create ``out``, or accept it to complete an interrupted ``prepare`` of the same options."""
    if (out / INDEX).is_file():
        raise ContrastkitError(
            f"{out} is already prepared ({INDEX} exists); use --data shards:{out}, or delete it "
            "to prepare again"
        )
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        saved = None
        if (out / MANIFEST).is_file():
            saved = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        if saved != manifest:
            raise ContrastkitError(
                f"{out} is not empty and not an interrupted prepare with these options: "
                "choose another --out"
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / MANIFEST, manifest)


def _tar_info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _encode(arr: np.ndarray, encoding: str) -> bytes:
    buf = io.BytesIO()
    if encoding == "raw":
        np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    else:
        from PIL import Image

        im = Image.fromarray(arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0))
        im.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


@dataclass(frozen=True)
class _Task:
    split: str
    number: int
    start: int
    stop: int
    directory: str
    encoding: str
    skip_bad: bool

    @property
    def path(self) -> Path:
        return Path(self.directory) / self.split / f"shard-{self.number:06d}.tar"


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")


def _one_thread() -> None:
    """A writer process computes on one thread, as a DataLoader worker does.

    A forked child that enters an OpenMP region its parent had threads for waits forever
    (a ``Dataset`` source resizing with torch did): one thread needs no pool.
    """
    import torch

    torch.set_num_threads(1)


def _write_shard(task: _Task) -> dict[str, Any]:
    """Write one shard (tar, ``.idx.npy``, ``.json``) atomically; return its summary."""
    src = _SOURCES[task.split]
    ext = EXTENSIONS[task.encoding]
    samples, bad = [], []
    for i in range(task.start, task.stop):
        try:
            arr, label = src.get(i)
        except BadImage as e:
            if not task.skip_bad:
                raise ContrastkitError(str(e)) from None
            bad.append(e.file)
            continue
        if src.shape is not None and arr.shape != src.shape:
            raise ContrastkitError(
                f"{src.where(i)}: image of shape {tuple(arr.shape)}, but {src.where(0)} has "
                f"{src.shape}: every image of a split must have one shape"
            )
        samples.append((f"{i:09d}", arr, label))
    tar_path = task.path
    tmp = _tmp(tar_path)
    sums = np.zeros((2, samples[0][1].shape[0] if samples else 0), dtype=np.int64)
    try:
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tf:
            for key, arr, label in samples:
                data = _encode(arr, task.encoding)
                tf.addfile(_tar_info(f"{key}.{ext}", len(data)), io.BytesIO(data))
                cls = str(label).encode()
                tf.addfile(_tar_info(f"{key}.cls", len(cls)), io.BytesIO(cls))
                flat = arr.reshape(arr.shape[0], -1).astype(np.int64)
                sums[0] += flat.sum(1)
                sums[1] += (flat * flat).sum(1)
        table = _offsets(tmp, ext, [(k, a, y) for k, a, y in samples], task.encoding)
        idx_path = tar_path.with_suffix(".idx.npy")
        idx_tmp = _tmp(idx_path)
        with open(idx_tmp, "wb") as f:
            np.save(f, table, allow_pickle=False)
        os.replace(idx_tmp, idx_path)
        summary = {
            "file": tar_path.name,
            "count": len(samples),
            "bytes": tmp.stat().st_size,
            "pixel_sum": sums[0].tolist(),
            "pixel_sumsq": sums[1].tolist(),
            "pixels": int(np.prod(samples[0][1].shape[1:])) * len(samples) if samples else 0,
            "skipped": bad,
        }
        write_atomic(tar_path.with_suffix(".json"), json.dumps(summary) + "\n")
        os.replace(tmp, tar_path)  # last: a .tar that exists is complete
    finally:
        tmp.unlink(missing_ok=True)
    return summary


def _offsets(tar: Path, ext: str, samples: list[tuple[str, np.ndarray, int]], enc: str) -> Any:
    """(n, 3) int64: offset and length of each sample's image bytes in ``tar``, and its label."""
    with tarfile.open(tar) as tf:
        members = {m.name: m for m in tf.getmembers()}
    table = np.zeros((len(samples), 3), dtype=np.int64)
    for row, (key, arr, label) in enumerate(samples):
        m = members[f"{key}.{ext}"]
        skip = npy_header_bytes(arr.shape) if enc == "raw" else 0
        table[row] = (m.offset_data + skip, m.size - skip, label)
    return table


def _done(task: _Task) -> dict[str, Any] | None:
    """The summary of a shard an earlier run completed, or None."""
    summary = task.path.with_suffix(".json")
    if task.path.is_file() and task.path.with_suffix(".idx.npy").is_file() and summary.is_file():
        done: dict[str, Any] = json.loads(summary.read_text(encoding="utf-8"))
        return done
    return None


def _stats(src: _Source, shards: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (0–1 scale): the in-memory figures, else from the exact sums.

    Both are :func:`~contrastkit.data.augment.stats_from_sums` of the same integer sums, so a
    folder prepared here has the statistics of the folder loaded in memory.
    """
    if src.stats is not None:
        return src.stats
    from contrastkit.data.augment import stats_from_sums

    total = sum(s["pixels"] for s in shards)
    if total == 0:
        return [], []
    written = [s for s in shards if s["count"]]
    # exact integer sums, as channel_stats counts them: int64 per shard (Σx² < 2**63 up to
    # 1.4e14 pixels a shard), Python ints across shards (int() reads older summaries' floats)
    s1 = [sum(int(s["pixel_sum"][c]) for s in written) for c in range(len(written[0]["pixel_sum"]))]
    s2 = [sum(int(s["pixel_sumsq"][c]) for s in written) for c in range(len(s1))]
    return stats_from_sums(s1, s2, total)


def prepare(
    source: str | Dataset[tuple[Tensor, int]],
    out: str | Path,
    *,
    test_data: Dataset[tuple[Tensor, int]] | None = None,
    image_size: int | None = None,
    limit: int | None = None,
    shard_size: int = 5000,
    encoding: str = "raw",
    workers: int = 2,
    skip_bad: bool = False,
    data_root: str | None = None,
    download: bool = False,
    quiet: bool = False,
) -> dict[str, Any]:
    """Write ``source``'s train and test splits as tar shards in ``out`` (``contrastkit prepare``).

    Args:
        source: A data set name (``fashion-mnist``…), ``folder:PATH``, or a ``Dataset`` of
            ``(image tensor (C, H, W), label)`` (its train split; ``test_data`` the test one).
        out: The directory to write (new or empty; or an interrupted ``prepare`` of the same
            options, which this completes).
        test_data: With a ``Dataset`` source: the test split.
        image_size: Resize folder images to this square size.
        limit: Keep this many training images (the seeded subset ``pretrain --limit`` takes).
        shard_size: Samples per shard.
        encoding: ``raw`` (``.npy`` uint8, the default: fastest to read) or ``png`` (smaller).
        workers: Processes writing shards.
        skip_bad: Skip unreadable folder images (listed in the index and on stderr) instead
            of stopping at the first.
        data_root: Directory of the source's files (each data set has a default).
        download: Fetch the source's files with torchvision first.
        quiet: No progress bar.

    Returns:
        The content of ``index.json``.

    Raises:
        ContrastkitError: on a bad option (before anything is written), a directory holding
            other things, an unreadable image (naming the file) without ``skip_bad``.
    """
    _check_source(source)
    from contrastkit.train.config import CUSTOM_DATA, PrepareConfig

    PrepareConfig(  # every option checked, before anything is written
        source=source if isinstance(source, str) else CUSTOM_DATA,
        out=str(out),
        image_size=image_size,
        limit=limit,
        shard_size=shard_size,
        encoding=encoding,
        workers=workers,
        skip_bad=skip_bad,
        data_root=data_root,
        download=download,
        quiet=quiet,
    )
    opts = {
        "source": source if isinstance(source, str) else "<dataset object>",
        "image_size": image_size,
        "limit": limit,
        "shard_size": shard_size,
        "encoding": encoding,
        "skip_bad": skip_bad,
        "data_root": data_root,
        "download": download,
    }
    sources = _sources(source, test_data, opts)
    if not (isinstance(source, str) and source.startswith(FOLDER_PREFIX)):
        _check_shapes(sources, encoding)  # a folder's images are decoded to one shape
    root = Path(out)
    _open_out(root, {k: v for k, v in opts.items() if k != "download"})
    _SOURCES.clear()
    _SOURCES.update(sources)
    try:
        shards = _write_all(root, sources, shard_size, encoding, skip_bad, workers, quiet)
    finally:
        _SOURCES.clear()
    return _write_index(root, source, sources, shards, opts)


def _check_shapes(sources: dict[str, _Source], encoding: str) -> None:
    """Record each split's image shape (its first image's) and check PNG can store it.

    Raises:
        ContrastkitError: with ``png``, for images of a channel count PNG does not store.
    """
    for src in sources.values():
        if not src.n:
            continue
        src.shape = tuple(src.get(0)[0].shape)
        channels = src.shape[0]
        if encoding == "png" and channels not in PNG_CHANNELS:
            raise ContrastkitError(
                f"--encoding (encoding) png stores images of 1 to 4 channels, got {channels} "
                f"({src.where(0)} is {src.shape}): use --encoding raw"
            )


def _write_all(
    root: Path,
    sources: dict[str, _Source],
    shard_size: int,
    encoding: str,
    skip_bad: bool,
    workers: int,
    quiet: bool,
) -> dict[str, list[dict[str, Any]]]:
    from tqdm.auto import tqdm

    tasks = []
    for split, src in sources.items():
        (root / split).mkdir(exist_ok=True)
        for stale in (root / split).glob(".*.tmp"):  # left by an interrupted prepare
            stale.unlink()
        for k, start in enumerate(range(0, max(src.n, 1), shard_size)):
            stop = min(start + shard_size, src.n)
            tasks.append(_Task(split, k, start, stop, str(root), encoding, skip_bad))
    results: dict[_Task, dict[str, Any]] = {}
    todo = []
    for t in tasks:
        done = _done(t)
        if done is None:
            todo.append(t)
        else:
            results[t] = done
    total = sum(t.stop - t.start for t in tasks)
    bar = tqdm(
        total=total,
        initial=total - sum(t.stop - t.start for t in todo),
        unit="img",
        disable=quiet or not sys.stderr.isatty(),
        dynamic_ncols=True,
    )
    if workers == 1 or len(todo) <= 1:
        for t in todo:
            results[t] = _write_shard(t)
            bar.update(t.stop - t.start)
    else:
        pool = multiprocessing.get_context("fork").Pool(min(workers, len(todo)), _one_thread)
        with pool:
            for t, summary in zip(todo, pool.imap(_write_shard, todo), strict=True):
                results[t] = summary
                bar.update(t.stop - t.start)
    bar.close()
    out: dict[str, list[dict[str, Any]]] = {s: [] for s in sources}
    for t in tasks:
        out[t.split].append(results[t])
    return out


def _write_index(
    root: Path,
    source: str | Dataset[tuple[Tensor, int]],
    sources: dict[str, _Source],
    shards: dict[str, list[dict[str, Any]]],
    opts: dict[str, Any],
) -> dict[str, Any]:
    train = sources["train"]
    if sum(s["count"] for s in shards["train"]) == 0:
        raise ContrastkitError(f"{opts['source']}: the training split has no readable image")
    shape = _shape_of(root, shards["train"])
    mean, std = _stats(train, shards["train"])
    preset = (
        dataset_info(source).preset
        if isinstance(source, str)
        else ("simclr" if shape[0] == 3 else "fashion-mnist")
    )
    splits = {}
    for split, entries in shards.items():
        skipped = sorted({f for s in entries for f in s["skipped"]} | set(sources[split].bad))
        for f in skipped:
            print(f"skipped {f}: not a readable image", file=sys.stderr)
        splits[split] = {
            "count": sum(s["count"] for s in entries),
            "shards": [{k: s[k] for k in ("file", "count", "bytes")} for s in entries],
            "skipped": skipped,
        }
    index = {
        "format": FORMAT,
        "version": VERSION,
        "source": opts["source"],
        "encoding": opts["encoding"],
        "image_shape": shape,
        "classes": train.classes or sources.get("test", train).classes,
        "mean": mean,
        "std": std,
        "preset": preset,
        "shard_size": opts["shard_size"],
        "limit": opts["limit"],
        "image_size": opts["image_size"],
        "splits": splits,
    }
    write_json(root / INDEX, index)
    return index


def _shape_of(root: Path, entries: list[dict[str, Any]]) -> list[int]:
    """The image shape of the first sample written (its ``.npy`` header, or its PNG)."""
    for e in entries:
        if e["count"]:
            with tarfile.open(root / "train" / e["file"]) as tf:
                member = tf.next()
                assert member is not None
                f = tf.extractfile(member)
                assert f is not None
                data = f.read()
            if member.name.endswith(".npy"):
                return list(np.load(io.BytesIO(data)).shape)
            from PIL import Image

            with Image.open(io.BytesIO(data)) as im:  # L, LA, RGB or RGBA
                return [len(im.getbands()), im.size[1], im.size[0]]
    raise ContrastkitError("no image was written")
