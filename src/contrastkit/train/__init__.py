"""Training: configs, the pretraining loop, linear probe, kNN, schedules, checkpoints, reports."""

from contrastkit.train.evaluate import embed, knn, linear_probe
from contrastkit.train.pretrain import PretrainResult, pretrain
from contrastkit.train.report import build_report, seed_summary
from contrastkit.train.run import run

__all__ = [
    "PretrainResult",
    "build_report",
    "embed",
    "knn",
    "linear_probe",
    "pretrain",
    "run",
    "seed_summary",
]
