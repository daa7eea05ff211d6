import os
import random
import subprocess
import sys
from pathlib import Path

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

SRC = str(Path(__file__).resolve().parents[2] / "src")


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("cannot pickle (simulated)")


def test_failed_pickle_leaves_previous_file_intact(tmp_path):
    path = tmp_path / "checkpoints" / "last.pt"
    save_atomic({"format": FORMAT, "w": torch.arange(3)}, path)
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="cannot pickle"):
        save_atomic({"format": FORMAT, "w": torch.zeros(1000), "bad": Unpicklable()}, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]  # no temp file left
    assert torch.equal(load_checkpoint(path)["w"], torch.arange(3))


def test_full_disk_is_one_line_and_keeps_the_previous_checkpoint(small_disks):
    disk = small_disks.mount(256 * 1024)  # a real file system: 64 pages of 4 KiB
    path = disk / "checkpoints" / "last.pt"
    save_atomic({"format": FORMAT, "w": torch.arange(3)}, path)
    save_atomic({"format": FORMAT, "w": torch.ones(40_000)}, path)  # 160 kB: fits
    before = path.read_bytes()
    with pytest.raises(ContrastkitError) as e:  # a second 160 kB beside it does not
        save_atomic({"format": FORMAT, "w": torch.zeros(40_000)}, path)
    assert str(e.value) == (
        f"cannot write checkpoint {path}: no space left on device; "
        f"the previous checkpoint {path} is intact"
    )
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]  # temp file removed
    assert torch.equal(load_checkpoint(path)["w"], torch.ones(40_000))
    first = disk / "other" / "last.pt"
    with pytest.raises(ContrastkitError, match="no space left on device; no earlier checkpoint"):
        save_atomic({"format": FORMAT, "w": torch.zeros(80_000)}, first)
    assert list(first.parent.iterdir()) == []


@pytest.mark.slow
def test_file_size_limit_gives_the_systems_error(tmp_path):
    # RLIMIT_FSIZE makes write(2) fail with EFBIG (Python ignores SIGXFSZ), in a subprocess
    path = tmp_path / "last.pt"
    save_atomic({"format": FORMAT, "w": torch.arange(3)}, path)
    before = path.read_bytes()
    code = (
        "import resource, sys, torch\n"
        "from contrastkit.train.checkpoint import save_atomic\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))\n"
        "save_atomic({'format': 2, 'w': torch.zeros(100_000)}, sys.argv[1])\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        env={**os.environ, "PYTHONPATH": SRC},
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0
    assert (
        f"ContrastkitError: cannot write checkpoint {path}: file too large; "
        f"the previous checkpoint {path} is intact" in r.stderr
    )
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_corrupt_truncated_or_missing_checkpoint(tmp_path):
    with pytest.raises(ContrastkitError, match="not found"):
        load_checkpoint(tmp_path / "none.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(ContrastkitError, match="truncated or corrupt"):
        load_checkpoint(bad)
    save_atomic({"format": FORMAT, "w": torch.zeros(1000)}, bad)
    bad.write_bytes(bad.read_bytes()[:2000])
    with pytest.raises(ContrastkitError) as e:
        load_checkpoint(bad)
    assert str(e.value) == f"checkpoint {bad} is truncated or corrupt (not a torch.save file)"
    torch.save({"something": 1}, bad)
    with pytest.raises(ContrastkitError, match="not a contrastkit checkpoint"):
        load_checkpoint(bad)


@pytest.mark.parametrize("protocol", [2, 4])  # GLOBAL and STACK_GLOBAL
def test_a_payload_checkpoint_is_refused_and_runs_nothing(tmp_path, payload, protocol):
    path = tmp_path / "last.pt"
    torch.save({"format": FORMAT, "x": payload}, path, pickle_protocol=protocol)
    payload.assert_runs_under(lambda: torch.load(path, weights_only=False))
    with pytest.raises(ContrastkitError) as e:
        load_checkpoint(path)
    assert not payload.ran()
    msg = str(e.value)
    assert msg.startswith(f"checkpoint {path} refused: it holds objects other than tensors and")
    assert msg.endswith("which could run code when loaded") and "\n" not in msg
    if protocol == 2:  # named when torch's static reader knows every opcode
        assert "(posix.system)" in msg


def test_an_older_format_gets_its_own_message(tmp_path):
    # format 1 stored NumPy's state tuple as np.random.get_state() returns it
    path = tmp_path / "last.pt"
    old = {"format": 1, "rng": {"numpy": np.random.get_state(), "torch": torch.get_rng_state()}}  # noqa: NPY002
    torch.save(old, path)
    with pytest.raises(ContrastkitError) as e:
        load_checkpoint(path)
    assert str(e.value).startswith(
        f"checkpoint {path} holds NumPy arrays, as format 1 checkpoints of older contrastkit "
        "versions did; this version reads format 2 only"
    )


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda",
            marks=[
                pytest.mark.gpu,
                pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
            ],
        ),
    ],
)
def test_rng_round_trip_through_a_safe_checkpoint(tmp_path, device):
    np.random.standard_normal()  # noqa: NPY002  (leaves a cached Gaussian in the state)
    gens = {"aug": torch.Generator().manual_seed(5)}
    save_atomic({"format": FORMAT, "rng": rng_state(gens)}, tmp_path / "last.pt")
    state = load_checkpoint(tmp_path / "last.pt", map_location=device)["rng"]  # weights_only
    first = draw(gens)
    restore_rng_state(state, gens)
    second = draw(gens)
    assert first[:3] == second[:3]
    assert torch.equal(first[3], second[3]) and torch.equal(first[4], second[4])


def draw(gens):
    legacy = np.random.rand(), np.random.standard_normal()  # noqa: NPY002  (the global NumPy state is part of the checkpoint)
    return (random.random(), *legacy, torch.rand(2), torch.rand(2, generator=gens["aug"]))
