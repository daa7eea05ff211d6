"""Time one training step split into parts: ours (batched on-device augmentation) vs the usual loop.

Ours: uint8 images held as one tensor, V views drawn by :class:`MultiViewAugment` in a few
batched tensor ops, channels-last model. Usual: PIL images through torchvision's per-sample
``transforms.v2`` pipeline in a ``DataLoader`` (collate), contiguous model. Both then run the
same forward + SupCon loss, backward and SGD step. Synthetic images (timing does not depend on
the pixel values). Prints one JSON line per measurement, then a table.

    PYTHONPATH=src python benchmarks/train_step.py                  # both configs
    PYTHONPATH=src python benchmarks/train_step.py --configs small_cnn-28
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from contrastkit.data import MultiViewAugment
from contrastkit.losses import supcon
from contrastkit.models import ProjectionHead, create_model

CONFIGS = {
    # name: (model, channels, size, preset, batch, repeats)
    "small_cnn-28": ("small_cnn", 1, 28, "fashion-mnist", 256, 6),
    "resnet18-32": ("resnet18", 3, 32, "simclr", 64, 2),  # ~30 s/step at batch 256 on 2 cores
}


def usual_transform(preset: str, size: int, mean: list[float], std: list[float]) -> v2.Compose:
    """The per-sample torchvision equivalent of our preset."""
    if preset == "fashion-mnist":
        geo = [v2.RandomResizedCrop(size, scale=(0.35, 1.0)), v2.RandomHorizontalFlip()]
        colour: list[v2.Transform] = []
    else:
        geo = [v2.RandomResizedCrop(size, scale=(0.2, 1.0)), v2.RandomHorizontalFlip()]
        colour = [
            v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
        ]
    return v2.Compose(
        [
            *geo,
            *colour,
            v2.PILToTensor(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean, std),
        ]
    )


class TwoViews(Dataset[tuple[Tensor, int]]):
    """PIL images, two independently transformed views each (the usual SimCLR dataset)."""

    def __init__(self, images: Tensor, transform: Callable[[Image.Image], Tensor]) -> None:
        mode = "L" if images.shape[1] == 1 else "RGB"
        arr = images.permute(0, 2, 3, 1).numpy()
        self.pil = [Image.fromarray(a.squeeze(-1) if mode == "L" else a, mode) for a in arr]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pil)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        img = self.pil[i]
        return torch.stack([self.transform(img), self.transform(img)]), i % 10


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_parts(
    encoder: torch.nn.Module,
    head: torch.nn.Module,
    opt: torch.optim.Optimizer,
    views: Tensor,
    labels: Tensor,
    fmt: torch.memory_format,
    device: torch.device,
) -> dict[str, float]:
    b, v = views.shape[:2]
    t0 = time.perf_counter()
    x = views.flatten(0, 1).contiguous(memory_format=fmt)  # (B·V, C, H, W)
    z = head(encoder(x)).view(b, v, -1)  # (B, V, D)
    loss = supcon(z, labels, 0.1)
    sync(device)
    t1 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    sync(device)
    t2 = time.perf_counter()
    opt.step()
    sync(device)
    t3 = time.perf_counter()
    return {"forward_loss": t1 - t0, "backward": t2 - t1, "optimizer": t3 - t2}


def bench(name: str, mode: str, device: torch.device) -> dict[str, object]:
    model_name, c, size, preset, batch, repeats = CONFIGS[name]
    torch.manual_seed(0)
    images = torch.randint(0, 256, (batch * (repeats + 1), c, size, size), dtype=torch.uint8)
    labels = torch.arange(batch) % 10
    mean, std = [0.5] * c, [0.25] * c
    encoder = create_model(model_name, in_channels=c, image_size=size).to(device)
    head = ProjectionHead(encoder.num_features).to(device)
    fmt = torch.channels_last if mode == "ours" else torch.contiguous_format
    encoder = encoder.to(memory_format=fmt)
    opt = torch.optim.SGD([*encoder.parameters(), *head.parameters()], lr=0.1, momentum=0.9)
    times: list[dict[str, float]] = []
    if mode == "ours":
        aug = MultiViewAugment(preset, 2, mean, std)
        g = torch.Generator(device=device).manual_seed(0)
        data = images.to(device)
        for r in range(repeats + 1):
            t = time.perf_counter()
            views = aug(data[r * batch : (r + 1) * batch], g)
            sync(device)
            parts = {"data_augment": time.perf_counter() - t}
            parts |= step_parts(encoder, head, opt, views, labels.to(device), fmt, device)
            times.append(parts)
    else:
        ds = TwoViews(images, usual_transform(preset, size, mean, std))
        loader = iter(DataLoader(ds, batch_size=batch, shuffle=True, num_workers=0, drop_last=True))
        for _ in range(repeats + 1):
            t = time.perf_counter()
            views, y = next(loader)
            views = views.to(device)
            parts = {"data_augment": time.perf_counter() - t}
            parts |= step_parts(encoder, head, opt, views, y.to(device), fmt, device)
            times.append(parts)
    times = times[1:]  # the first step warms up kernels and allocators
    med = {k: statistics.median(t[k] for t in times) for k in times[0]}
    whole = sum(med.values())
    return {
        "config": name,
        "mode": mode,
        "batch": batch,
        "views": 2,
        "repeats": repeats,
        **{f"{k}_s": round(v, 4) for k, v in med.items()},
        "step_s": round(whole, 4),
        "images_per_s": round(batch / whole, 1),
        "augment_images_per_s": round(2 * batch / med["data_augment"], 1),
        "device": str(device),
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    for name in args.configs.split(","):
        for mode in ["usual", "ours"]:
            row = bench(name, mode, device)
            row["machine"] = platform.processor() or platform.machine()
            print(json.dumps(row), flush=True)
            rows.append(row)
    print()
    print(
        f"{'config':14} {'mode':6} {'batch':>5} {'augment':>8} {'fwd+loss':>8} {'backward':>8} {'optim':>7} {'step s':>7} {'img/s':>7} {'speed-up':>8}"
    )
    for name in args.configs.split(","):
        usual = next(r for r in rows if r["config"] == name and r["mode"] == "usual")
        for r in (x for x in rows if x["config"] == name):
            speed = float(r["images_per_s"]) / float(usual["images_per_s"])  # type: ignore[arg-type]
            print(
                f"{name:14} {r['mode']:6} {r['batch']:>5} {r['data_augment_s']:>8.3f} {r['forward_loss_s']:>8.3f} "
                f"{r['backward_s']:>8.3f} {r['optimizer_s']:>7.3f} {r['step_s']:>7.3f} {r['images_per_s']:>7.0f} {speed:>7.2f}×"
            )


if __name__ == "__main__":
    main()
