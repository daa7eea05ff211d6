"""Two gloo processes pretraining on ``shards:DIR``: each epoch, the samples the ranks' loaders
deliver are disjoint and together are the whole set less the dropped remainder.

The shards are prepared from a data set whose label is the sample's index, so the labels each
training step receives (recorded by wrapping ``train_step``, the real loader feeding it) name
the samples each process trained on.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
from test_ddp import _launch_env, _require_gloo

from contrastkit.data.prepare import prepare
from contrastkit.train.config import PretrainConfig

loop_module = importlib.import_module("contrastkit.train.loop")
pretrain_module = importlib.import_module("contrastkit.train.pretrain")

N, BATCH, EPOCHS, WORLD = 70, 16, 2, 2  # 4 steps per epoch: 64 samples seen, 6 dropped

pytestmark = pytest.mark.distributed


class Indexed(torch.utils.data.Dataset):
    """N grey 8×8 images; image i has label i (and its pixels vary with i)."""

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        g = torch.Generator().manual_seed(i)
        return torch.randint(0, 256, (1, 8, 8), generator=g, dtype=torch.uint8), i


def _worker(rank: int, ports: Any, shards: str, out: str) -> None:
    torch.set_num_threads(1)
    _launch_env(rank, WORLD, ports)
    seen: list[dict[str, Any]] = []
    real_step = loop_module.train_step

    def recording_step(cfg: Any, state: Any, views: Any, labels: torch.Tensor) -> float:
        seen.append({"epoch": state.epoch, "step": state.step, "ids": labels.tolist()})
        return real_step(cfg, state, views, labels)

    loop_module.train_step = recording_step
    try:
        cfg = PretrainConfig(
            data=f"shards:{shards}",
            method="simclr",
            batch_size=BATCH,
            epochs=EPOCHS,
            knn_every=0,
            device="cpu",
            quiet=True,
            workers=1,
            out=out,
        )
        pretrain_module.pretrain(cfg, final_knn=False)
    finally:
        loop_module.train_step = real_step
    Path(out, f"seen-{rank}.json").write_text(json.dumps(seen))


def test_ranks_see_disjoint_samples_that_cover_the_epoch(tmp_path: Path) -> None:
    _require_gloo()
    shards = tmp_path / "indexed"
    prepare(Indexed(), shards, test_data=Indexed(), shard_size=32, quiet=True)
    out = tmp_path / "run"
    ports = mp.get_context("spawn").SimpleQueue()
    mp.spawn(_worker, args=(ports, str(shards), str(out)), nprocs=WORLD, join=True)
    seen = [json.loads((out / f"seen-{r}.json").read_text()) for r in range(WORLD)]
    from contrastkit.train.rundata import epoch_batches

    for epoch in range(EPOCHS):
        per_rank = [[i for s in steps if s["epoch"] == epoch for i in s["ids"]] for steps in seen]
        assert [len(ids) for ids in per_rank] == [N // BATCH * BATCH // WORLD] * WORLD
        assert not set(per_rank[0]) & set(per_rank[1])  # disjoint
        together = set(per_rank[0]) | set(per_rank[1])
        assert len(together) == N // BATCH * BATCH  # the whole set but the dropped remainder
        # step k of both ranks together is batch k of one process (the same global order)
        single = epoch_batches(N, BATCH, seed=0, epoch=epoch)
        steps = [[s for s in r if s["epoch"] == epoch] for r in seen]
        for k, batch in enumerate(single):
            assert sorted(steps[0][k]["ids"] + steps[1][k]["ids"]) == sorted(batch.tolist())
