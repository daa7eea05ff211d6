"""Matplotlib (Agg) figures of a run, each built from the files of the run directory alone."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from contrastkit.train import files, metrics, rundir

if TYPE_CHECKING:
    from contrastkit.train.space import Param

TSNE_MAX_POINTS = 2000


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_loss_lr(metrics: list[dict[str, Any]], path: Path, title: str) -> None:
    """Loss and learning rate per step (two panels)."""
    plt = _pyplot()
    steps = [r for r in metrics if r["kind"] == "step"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    a.plot([r["step"] for r in steps], [r["loss"] for r in steps], lw=1)
    a.set(xlabel="step", ylabel="loss", title=f"{title}: training loss")
    b.plot([r["step"] for r in steps], [r["lr"] for r in steps], lw=1, color="tab:orange")
    b.set(xlabel="step", ylabel="learning rate", title="warm-up + cosine")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_knn(curves: dict[str, list[tuple[int, float]]], path: Path) -> None:
    """Plot the kNN test accuracy per epoch, one line per run (see ``metrics.knn_curve``)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for name, pts in curves.items():
        if pts:
            ax.plot(
                [e for e, _ in pts], [100 * a for _, a in pts], label=name, lw=1.2, marker="o", ms=3
            )
    ax.set(xlabel="epoch", ylabel="kNN test accuracy (%)", title="kNN monitor and final kNN")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_tsne(
    features: np.ndarray,
    labels: np.ndarray,
    path: Path,
    title: str,
    classes: list[str] | None = None,
    seed: int = 0,
) -> list[str]:
    """2-D t-SNE of (up to 2,000) test features coloured by label.

    Up to 20 classes get a legend with their names (``classes[label]``, or the label number
    where ``classes`` does not name it); more get a colour bar of label numbers.

    Returns:
        The legend's entries (empty with a colour bar).
    """
    from sklearn.manifold import TSNE

    plt = _pyplot()
    if len(features) > TSNE_MAX_POINTS:
        keep = np.random.default_rng(seed).permutation(len(features))[:TSNE_MAX_POINTS]
        features, labels = features[keep], labels[keep]
    perplexity = min(30.0, max(2.0, (len(features) - 1) / 3))
    xy = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(features)
    present = np.unique(labels)
    entries: list[str] = []
    fig, ax = plt.subplots(figsize=(6.2 if len(present) <= 20 else 4.8, 4.5))
    if len(present) <= 20:
        cmap = plt.get_cmap("tab20" if len(present) > 10 else "tab10")
        names = classes or []
        for i, label in enumerate(present):
            at = labels == label
            name = names[label] if 0 <= label < len(names) else str(label)
            ax.scatter(xy[at, 0], xy[at, 1], color=cmap(i), s=6, label=name)
            entries.append(name)
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, markerscale=2)
    else:
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab20", s=6)
        fig.colorbar(sc, ax=ax, fraction=0.046)
    ax.set(title=f"{title}: t-SNE of test features", xticks=[], yticks=[])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return entries


def plot_similarity(sim: np.ndarray, pos: np.ndarray, path: Path, title: str) -> None:
    """A batch's cosine-similarity matrix beside its positive mask."""
    plt = _pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3.8))
    im = a.imshow(sim, vmin=-1, vmax=1, cmap="RdBu_r")
    a.set(title=f"{title}: cosine similarity", xlabel="view", ylabel="view")
    fig.colorbar(im, ax=a, fraction=0.046)
    b.imshow(pos, cmap="Greys")
    b.set(title="positives", xlabel="view")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def text_colours(confusion: np.ndarray) -> np.ndarray:
    """The colour of each cell's number on the ``Blues`` map: white on the darker half, else black.

    The map runs from near-white at 0 to dark navy at the largest count; a cell above half of
    it is dark enough that black numbers vanish.
    """
    top = confusion.max() if confusion.size else 0
    return (
        np.where(confusion > top / 2, "white", "black")
        if top > 0
        else np.full(confusion.shape, "black")
    )


def plot_confusion(confusion: np.ndarray, classes: list[str], path: Path, title: str) -> None:
    """The linear probe's test confusion matrix (counts; numbers readable on every cell)."""
    plt = _pyplot()
    k = len(confusion)
    fig, ax = plt.subplots(figsize=(4.8, 4.3))
    ax.imshow(confusion, cmap="Blues", vmin=0)
    colours = text_colours(confusion)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if confusion[i, j]:
                    ax.text(
                        j,
                        i,
                        str(confusion[i, j]),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color=colours[i, j],
                    )
        names = classes[:k] if len(classes) >= k else [str(i) for i in range(k)]
        ax.set_xticks(range(k), names, rotation=90, fontsize=7)
        ax.set_yticks(range(k), names, fontsize=7)
    ax.set(xlabel="predicted", ylabel="true", title=f"{title}: probe confusion")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def method_plots(run: Path, title: str) -> list[Path]:
    """Draw every figure whose data a pretraining run directory holds; return the files."""
    out = run / "plots"
    out.mkdir(exist_ok=True)
    made = []
    records = metrics.read_metrics(run)
    if records:
        plot_loss_lr(records, out / "loss_lr.png", title)
        plot_knn({title: metrics.knn_curve(run)}, out / "knn.png")
        made += [out / "loss_lr.png", out / "knn.png"]
    if (run / "similarity.npz").is_file():
        s = np.load(run / "similarity.npz")
        plot_similarity(s["similarity"], s["positives"], out / "similarity.png", title)
        made.append(out / "similarity.png")
    probe = files.read_json(run / rundir.result_name("probe", "test"))
    if (run / "embeddings_test.npz").is_file():
        e = np.load(run / "embeddings_test.npz")
        classes = probe.get("classes") if probe else None
        plot_tsne(e["features"], e["labels"], out / "tsne.png", title, classes)
        made.append(out / "tsne.png")
    if probe is not None:
        plot_confusion(
            np.array(probe["confusion"]), probe.get("classes", []), out / "confusion.png", title
        )
        made.append(out / "confusion.png")
    return made


def plot_sweep(rows: list[dict[str, Any]], params: list[Param], path: Path) -> None:
    """Validation accuracy against each parameter, one panel each (pruned trials as crosses)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(params), figsize=(3.6 * len(params), 3.2), squeeze=False)
    for ax, p in zip(axes[0], params, strict=True):
        for state, marker, key in (
            ("complete", "o", "val_acc"),
            ("pruned", "x", "last_knn_val_acc"),
        ):
            pts = [(r[p.name], r[key]) for r in rows if r["state"] == state and r[key] is not None]
            if not pts:
                continue
            xs = [x if p.choices is None else p.choices.index(x) for x, _ in pts]
            ax.scatter(xs, [100 * y for _, y in pts], marker=marker, label=state)
        if p.choices is not None:
            ax.set_xticks(range(len(p.choices)), [str(c) for c in p.choices])
        elif p.log:
            ax.set_xscale("log")
        ax.set(xlabel=p.name, ylabel="validation accuracy (%)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    with files.os_errors("write", path):
        fig.savefig(path, dpi=110)
    plt.close(fig)
