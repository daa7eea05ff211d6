"""What a pretraining shows while it runs: a bar, one line per epoch, TensorBoard scalars.

On a terminal a tqdm bar counts the steps; when stderr is not a terminal (a log file, CI) one
line per epoch goes to stderr instead: method, epoch/total, loss, kNN, images/s and ETA. With
``--tensorboard`` the step and epoch figures also go to ``RUN/tensorboard`` through
``torch.utils.tensorboard``; ``metrics.jsonl`` stays the record every report reads.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from contrastkit.errors import ContrastkitError

TENSORBOARD_DIR = "tensorboard"


def duration(seconds: float) -> str:
    """``seconds`` as ``1h02m``, ``12m05s`` or ``42s``."""
    s = max(0, round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def epoch_line(method: str, record: dict[str, Any], epochs: int, eta: float | None) -> str:
    """One epoch in a line: ``supcon epoch 3/100: loss 4.1234, kNN 91.20 %, 812 images/s, ETA 9m10s``."""
    knn = record.get("knn_acc")
    parts = [
        f"{method} epoch {record['epoch']}/{epochs}: loss {record['loss']:.4f}",
        f"kNN {100 * knn:.2f} %" if knn is not None else "kNN –",
        f"{record['images_per_s']:.0f} images/s",
    ]
    if eta is not None:
        parts.append(f"ETA {duration(eta)}")
    return ", ".join(parts)


class Progress:
    """The bar, the epoch lines and the TensorBoard writer of one pretraining process.

    Args:
        method: The method trained (named in the lines).
        epochs: The run's last epoch.
        total_steps: Steps of the whole run.
        step: Steps already done (a resumed run's).
        quiet: Show nothing (TensorBoard still logs if asked).
        main: Whether this process reports (rank 0).
        tensorboard: Directory to write TensorBoard events to, or None.
    """

    def __init__(
        self,
        method: str,
        epochs: int,
        total_steps: int,
        step: int,
        *,
        quiet: bool,
        main: bool,
        tensorboard: Path | None = None,
    ) -> None:
        from tqdm.auto import tqdm

        terminal = sys.stderr.isatty()
        self.method, self.epochs = method, epochs
        self.lines = main and not quiet and not terminal
        self.bar = tqdm(
            total=total_steps,
            initial=step,
            disable=quiet or not main or not terminal,
            unit="step",
            dynamic_ncols=True,
        )
        self.writer = _writer(tensorboard) if main and tensorboard is not None else None
        self._start = time.perf_counter()
        self._done = 0

    def epoch(self, records: list[dict[str, Any]]) -> None:
        """Report an epoch: its step records and, last, its epoch record (``metrics.jsonl``'s)."""
        record = records[-1]
        self._done += 1
        if self.lines:
            per_epoch = (time.perf_counter() - self._start) / self._done
            eta = per_epoch * (self.epochs - record["epoch"])
            print(epoch_line(self.method, record, self.epochs, eta), file=sys.stderr, flush=True)
        if self.writer is not None:
            for r in records[:-1]:
                self.writer.add_scalar("train/loss", r["loss"], r["step"])
                self.writer.add_scalar("train/lr", r["lr"], r["step"])
            step = record["step"]
            self.writer.add_scalar("epoch/loss", record["loss"], step)
            self.writer.add_scalar("epoch/images_per_s", record["images_per_s"], step)
            if record.get("knn_acc") is not None:
                self.writer.add_scalar("epoch/knn_acc", record["knn_acc"], step)
            self.writer.flush()

    def close(self) -> None:
        """Close the bar and the TensorBoard writer."""
        self.bar.close()
        if self.writer is not None:
            self.writer.close()


def _writer(path: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ContrastkitError(
            "--tensorboard needs the tensorboard package: pip install tensorboard"
        ) from None
    return SummaryWriter(log_dir=str(path))
