import random

import numpy as np
import pytest
import torch

from contrastkit.errors import ContrastkitError
from contrastkit.train.checkpoint import (
    FORMAT,
    load_checkpoint,
    restore_rng_state,
    rng_state,
    save_atomic,
)


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("disk full (simulated by a failing pickle)")


def test_failed_save_leaves_previous_file_intact(tmp_path):
    path = tmp_path / "checkpoints" / "last.pt"
    save_atomic({"format": FORMAT, "w": torch.arange(3)}, path)
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="disk full"):
        save_atomic({"format": FORMAT, "w": torch.zeros(1000), "bad": Unpicklable()}, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]  # no temp file left
    assert torch.equal(load_checkpoint(path)["w"], torch.arange(3))


def test_corrupt_or_missing_checkpoint(tmp_path):
    with pytest.raises(ContrastkitError, match="not found"):
        load_checkpoint(tmp_path / "none.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(ContrastkitError, match="corrupt"):
        load_checkpoint(bad)
    torch.save({"something": 1}, bad)
    with pytest.raises(ContrastkitError, match="not a contrastkit checkpoint"):
        load_checkpoint(bad)


def test_rng_round_trip():
    gens = {"aug": torch.Generator().manual_seed(5)}
    state = rng_state(gens)
    first = draw(gens)
    restore_rng_state(state, gens)
    second = draw(gens)
    assert first[:2] == second[:2]
    assert torch.equal(first[2], second[2]) and torch.equal(first[3], second[3])


def draw(gens):
    legacy = np.random.rand()  # noqa: NPY002  (the global NumPy state is part of the checkpoint)
    return (random.random(), legacy, torch.rand(2), torch.rand(2, generator=gens["aug"]))
