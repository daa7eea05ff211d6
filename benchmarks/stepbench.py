"""Shared by ``precision.py`` and ``encoders.py``: time contrastkit's training step and extraction.

Variants (a model and a precision each) take turns, round by round (A, B, A, B, ...), so load
on a shared machine hits all alike; callers report ratios of the medians.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from dataclasses import dataclass

import torch

from contrastkit.data import MultiViewAugment
from contrastkit.train import recipes
from contrastkit.train.config import PretrainConfig
from contrastkit.train.features import extract_features
from contrastkit.train.loop import train_step
from contrastkit.train.networks import DataShape
from contrastkit.train.state import TrainingState, build_training_state


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every step benchmark takes."""
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--extract", type=int, default=10_000, help="images to extract per round")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())


@dataclass
class Timings:
    """Median seconds per training step and per extraction of ``--extract`` images."""

    step_s: float
    extract_s: float


def time_variants(
    args: argparse.Namespace, variants: dict[str, tuple[str, str]]
) -> tuple[dict[str, Timings], dict[str, TrainingState]]:
    """Time ``variants`` (name → (model, precision)): a SupCon step and an extraction per round.

    The step is ``loop.train_step`` (forward of 2 views, loss, backward, SGD; augmentation
    excluded) on synthetic uint8 images, channels-last; timing does not depend on pixel values.
    """
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    c, s = args.channels, args.size
    shape = DataShape(c, s, 10, [0.5] * c, [0.25] * c, [str(i) for i in range(10)])
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.batch, c, s, s), dtype=torch.uint8, generator=g)
    labels = torch.arange(args.batch) % 10
    bank = torch.randint(0, 256, (args.extract, c, s, s), dtype=torch.uint8, generator=g)
    views = MultiViewAugment("fashion-mnist", 2, shape.mean, shape.std)(images, g)

    def extract(st: TrainingState, x: torch.Tensor) -> None:
        extract_features(
            st.encoder,
            x,
            mean=shape.mean,
            std=shape.std,
            amp_dtype=st.amp_dtype,
            channels_last=True,
        )

    cfgs, states = {}, {}
    for name, (model, precision) in variants.items():
        cfgs[name] = recipes.resolve(
            PretrainConfig(
                data="digits",
                method="supcon",
                model=model,
                precision=precision,
                batch_size=args.batch,
                out="unused",
            )
        )
        states[name] = build_training_state(cfgs[name], shape, 10 * args.batch, device)
        train_step(cfgs[name], states[name], views, labels)  # warm-up: kernels, allocator
        extract(states[name], bank[: args.batch])
    step: dict[str, list[float]] = {n: [] for n in variants}
    extraction: dict[str, list[float]] = {n: [] for n in variants}
    for _ in range(args.rounds):
        for name in variants:
            t = time.perf_counter()
            train_step(cfgs[name], states[name], views, labels)
            step[name].append(time.perf_counter() - t)
            t = time.perf_counter()
            extract(states[name], bank)
            extraction[name].append(time.perf_counter() - t)
    timings = {
        n: Timings(statistics.median(step[n]), statistics.median(extraction[n])) for n in variants
    }
    return timings, states


def timing_fields(args: argparse.Namespace, t: Timings, base: Timings) -> dict[str, object]:
    """A JSON row's timing and machine fields; speedups are relative to ``base``."""
    return {
        "batch": args.batch,
        "step_s": round(t.step_s, 4),
        "step_speedup": round(base.step_s / t.step_s, 2),
        "extract_images_per_s": round(args.extract / t.extract_s, 1),
        "extract_speedup": round(base.extract_s / t.extract_s, 2),
        "rounds": args.rounds,
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "machine": platform.machine(),
    }
