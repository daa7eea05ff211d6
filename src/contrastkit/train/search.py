"""``contrastkit index`` and ``search``: nearest training images of new images, through faiss.

The index holds the backbone features of the run's training split without its
validation images (``--val-fraction``), as retrieval takes its reference; L2-normalised, so
the inner product is the cosine similarity: ``IndexFlatIP`` (exact, the default) or
``IndexHNSWFlat`` (approximate, for large sets). Beside it, ``index.json`` records
which run and which weights it was built from (the checkpoint's SHA-256) and how many
validation images were left out, and ``labels.npz`` the label and sample id (the position in
the whole training split) of every row. An index of another run, or of the same run's
earlier weights, is refused.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from contrastkit.data.adapt import adapt_images
from contrastkit.data.shards import take
from contrastkit.data.splits import carve_positions
from contrastkit.errors import ContrastkitError, ContrastkitWarning
from contrastkit.train import files, rundir
from contrastkit.train.config import IndexConfig, SearchConfig
from contrastkit.train.evaluate import (
    LoadedRun,
    _features,
    _split,
    _val_fraction,
    load_encoder,
    neighbours,
)

INDEX_FILE = "index.faiss"
INDEX_INFO = "index.json"
INDEX_LABELS = "labels.npz"
HNSW_LINKS = 32
"""Neighbours per node of the approximate index (faiss ``IndexHNSWFlat(d, M)``)."""
HNSW_EF_SEARCH = 64
"""Candidates the approximate index visits per search (faiss' default 16 misses more)."""


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise ContrastkitError(
            "index and search need faiss: pip install faiss-cpu (or faiss-gpu)"
        ) from None
    return faiss


def checkpoint_sha256(run_dir: str | Path) -> str:
    """SHA-256 of the run's ``checkpoints/last.pt``: which weights an index was built from."""
    path = Path(run_dir) / rundir.CHECKPOINT
    digest = hashlib.sha256()
    with files.os_errors("read", path), open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def unit_features(run: LoadedRun, images: Tensor) -> np.ndarray:
    """L2-normalised backbone features of uint8 images (N, C, H, W), float32 (N, F)."""
    from contrastkit.data import ImageTensorDataset

    return _unit(_features(run, ImageTensorDataset(images, torch.full((len(images),), -1))))


def _unit(feats: Tensor) -> np.ndarray:
    return F.normalize(feats, dim=1).cpu().numpy().astype(np.float32)


def build_index(config: IndexConfig) -> Path:
    """Index the run's training features (``contrastkit index``); returns the directory.

    The training split without the run's validation images (``val_fraction``), as
    :func:`~contrastkit.train.evaluate.retrieval` takes its reference. Writes
    ``index.faiss``, ``index.json`` (the run, the checkpoint's SHA-256 and epoch, the kind of
    index, its size M and dimension, ``validation_left_out`` (V, the images not indexed), the
    input channels and size) and ``labels.npz`` (``labels`` and ``ids``, int64 (M,): each
    row's label and position in the whole training split).
    """
    run = load_encoder(config.run_dir, config.device)
    faiss = _faiss()
    full = _split(run, None, "train")
    ids, held_out = carve_positions(full, _val_fraction(run))  # (M,), (V,)
    train = full.subset(ids) if len(held_out) else full  # retrieval's reference
    feats = _unit(_features(run, train))  # (M, F), streamed from shards:DIR too
    dim = feats.shape[1]
    if config.approximate:
        index = faiss.IndexHNSWFlat(dim, HNSW_LINKS, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = HNSW_EF_SEARCH  # saved with the index
    else:
        index = faiss.IndexFlatIP(dim)
    index.add(feats)
    out = Path(config.directory)
    with files.os_errors("create directory", out):
        out.mkdir(parents=True, exist_ok=True)
    with files.os_errors("write", out / INDEX_FILE):
        faiss.write_index(index, str(out / INDEX_FILE))
    with files.os_errors("write", out / INDEX_LABELS):
        np.savez(out / INDEX_LABELS, labels=train.labels.numpy(), ids=ids.numpy())
    info = {
        "run_dir": str(Path(config.run_dir).resolve()),
        "checkpoint_sha256": checkpoint_sha256(config.run_dir),
        "checkpoint_epoch": run.epoch,
        "kind": f"hnsw (M={HNSW_LINKS}, efSearch={HNSW_EF_SEARCH})"
        if config.approximate
        else "exact (flat inner product)",
        "similarity": "cosine: inner product of L2-normalised backbone features",
        "size": len(train),
        "validation_left_out": len(held_out),
        "dim": dim,
        "data": run.config.get("data"),
        "split": "train",
        "channels": run.shape.channels,
        "image_size": run.shape.size,
        "classes": run.shape.classes,
    }
    files.write_json(out / INDEX_INFO, info)
    return out


@dataclass
class Neighbour:
    """A training image found for a query: its sample id, label and cosine similarity."""

    id: int
    label: int
    similarity: float


def read_images(paths: Sequence[str], channels: int, size: int) -> Tensor:
    """Load image files as uint8 (N, channels, size, size), converting with a warning each.

    Raises:
        ContrastkitError: naming the first file that is missing or not a readable image.
    """
    from PIL import Image, UnidentifiedImageError

    out = []
    for p in paths:
        try:
            with Image.open(p) as handle:
                handle.load()
                im = handle.convert("L" if handle.mode in ("L", "1", "I;16", "I") else "RGB")
        except FileNotFoundError:
            raise ContrastkitError(f"image {p} not found") from None
        except (UnidentifiedImageError, OSError) as e:
            raise ContrastkitError(f"{p}: not a readable image ({e})") from None
        arr = np.array(im, dtype=np.uint8)  # a writable copy
        x = torch.from_numpy(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1).copy())
        x, notes = adapt_images(x[None], channels, size)  # (1, C, size, size)
        if notes:
            warnings.warn(
                f"{p}: {'; '.join(notes)} to fit the run's input", ContrastkitWarning, stacklevel=2
            )
        out.append(x)
    return torch.cat(out)


def _open_index(config: SearchConfig) -> tuple[Any, dict[str, Any], np.ndarray, np.ndarray]:
    """Index, ``index.json``, each row's label and id; refused unless of this run's weights."""
    where = Path(config.directory)
    info = files.read_json(where / INDEX_INFO)
    if info is None or not (where / INDEX_FILE).is_file():
        raise ContrastkitError(
            f"no index in {where}: build it with `contrastkit index {config.run_dir}`"
        )
    if info.get("checkpoint_sha256") != checkpoint_sha256(config.run_dir):
        raise ContrastkitError(
            f"the index in {where} was built from {info.get('run_dir')} (epoch "
            f"{info.get('checkpoint_epoch')}), not from the weights of {config.run_dir}: "
            f"rebuild it with `contrastkit index {config.run_dir}`"
        )
    index = _faiss().read_index(str(where / INDEX_FILE))
    with np.load(where / INDEX_LABELS) as rows:  # an id: the position in the training split
        labels, ids = rows["labels"], rows["ids"]
    return index, info, labels, ids


def search(config: SearchConfig, images: Sequence[str]) -> list[list[Neighbour]]:
    """The k nearest training images of each image file (``contrastkit search``).

    Images of other channels or size than the run's are converted (grey ↔ colour, resized),
    each with a warning. Writes a PNG grid (``config.out``): per row a query and its
    neighbours with label and similarity.

    Args:
        config: The run, the index directory, k, the PNG and the device.
        images: Paths of image files (any format Pillow reads).

    Returns:
        Per image, its neighbours, most similar first.

    Raises:
        ContrastkitError: with no image given, a missing or unreadable image, no index, or an
            index built from other weights.
    """
    if not images:
        raise ContrastkitError("search needs at least one image file")
    run = load_encoder(config.run_dir, config.device)
    index, info, labels, ids = _open_index(config)
    queries = read_images(images, run.shape.channels, run.shape.size)
    k = neighbours(config.k, index.ntotal, "search")
    sims, hits = index.search(unit_features(run, queries), k)  # (N, k) each: rows of the index
    found = found_neighbours(sims, hits, labels, ids)
    short = [j for j, row in enumerate(found) if len(row) < k]
    if short:
        warnings.warn(
            f"the index found fewer than k={k} neighbours for {len(short)} of {len(found)} "
            f"image(s) (first: {images[short[0]]}), as an approximate index may; one built "
            "without --approximate finds all k",
            ContrastkitWarning,
            stacklevel=2,
        )
    train = _split(run, None, "train")
    shown = sorted({n.id for row in found for n in row})
    bank = dict(zip(shown, take(train, shown), strict=True))  # only the neighbours' images
    _plot_grid(queries, found, bank, info.get("classes") or [], Path(config.out))
    return found


def found_neighbours(
    sims: np.ndarray, hits: np.ndarray, labels: np.ndarray, ids: np.ndarray
) -> list[list[Neighbour]]:
    """Per query, its neighbours from faiss' ``(N, k)`` similarities and row numbers.

    faiss pads a row with row number -1 (similarity -inf or a float's lowest value) when it
    found fewer than k vectors, which an approximate index can; those entries are dropped, as
    ``ids[-1]`` would otherwise name the last indexed image.
    """
    return [
        [
            Neighbour(int(ids[i]), int(labels[i]), float(s))
            for s, i in zip(srow, irow, strict=True)
            if i >= 0
        ]
        for srow, irow in zip(sims, hits, strict=True)
    ]


def _plot_grid(
    queries: Tensor,
    found: list[list[Neighbour]],
    bank: dict[int, Tensor],
    classes: list[str],
    path: Path,
) -> None:
    """A PNG: one row per query, the query then its neighbours (id, label, similarity)."""
    from contrastkit.train.plots import _pyplot

    plt = _pyplot()
    rows, cols = len(found), 1 + len(found[0])
    fig, axes = plt.subplots(rows, cols, figsize=(1.4 * cols, 1.6 * rows), squeeze=False)
    for r, row in enumerate(found):
        pics = [(queries[r], "query")] + [
            (bank[n.id], f"#{n.id} {_name(n.label, classes)}\n{n.similarity:.3f}") for n in row
        ]
        for c, (img, title) in enumerate(pics):
            ax = axes[r][c]
            arr = img.permute(1, 2, 0).numpy()
            ax.imshow(arr[..., 0] if arr.shape[2] == 1 else arr, cmap="gray", vmin=0, vmax=255)
            ax.set_title(title, fontsize=7)
            ax.set_axis_off()
    fig.tight_layout()
    with files.os_errors("write", path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    plt.close(fig)


def _name(label: int, classes: list[str]) -> str:
    return classes[label] if 0 <= label < len(classes) else str(label)
