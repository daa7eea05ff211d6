import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--batch", "8", "--rounds", "1", "--extract", "32", "--threads", "1"]


def _script(script: str, *args: str) -> tuple[list[dict], str]:
    """Run ``benchmarks/script`` with ``args`` from the repository: its JSON lines and stdout."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")], r.stdout


def _bench(script: str, *args: str) -> tuple[list[dict], str]:
    return _script(script, *TINY, *args)


def test_precision_benchmark_runs_and_reports_both_precisions():
    rows, out = _bench("precision.py")
    assert [row["precision"] for row in rows] == ["fp32", "bf16"]
    assert rows[0]["step_speedup"] == 1.0 and all(row["step_s"] > 0 for row in rows)
    assert "| bf16 |" in out


def test_encoders_benchmark_counts_multiply_adds_of_both_small_cnns():
    rows, out = _bench("encoders.py")
    assert [row["model"] for row in rows] == ["small_cnn", "small_cnn_s2"]
    # by hand, per 28x28 image: 3x3 convolutions 1->32 and 32->32 at 28 px (small_cnn) or
    # 1->32 stride 2 at 14 px (s2); both then 32->64, 64->64 at 14 px, 64->128, 128->128 at 7 px
    shared = 9 * (14 * 14 * (32 * 64 + 64 * 64) + 7 * 7 * (64 * 128 + 128 * 128))
    assert rows[0]["multiply_adds"] == 9 * 28 * 28 * (32 + 32 * 32) + shared
    assert rows[1]["multiply_adds"] == 9 * 14 * 14 * 32 + shared
    assert rows[0]["parameters"] - rows[1]["parameters"] == 9 * 32 * 32 + 2 * 32  # conv + BN
    assert rows[0]["step_speedup"] == 1.0 and rows[1]["step_s"] > 0
    assert "| small_cnn_s2 | 21.7M | 277,600 |" in out


def test_embeddings_benchmark_finds_the_same_neighbours_with_faiss_and_torch():
    args = ["--bank", "1000", "--queries", "10", "--queries-metric", "100", "--threads", "1"]
    rows, out = _script("embeddings.py", *args)
    search = {row["method"]: row for row in rows if row["part"] == "search"}
    assert set(search) == {"faiss-flat", "torch-brute", "faiss-hnsw"}
    assert search["torch-brute"]["same_neighbours_as_flat"] == 1.0  # exact is exact
    (metric,) = [row for row in rows if row["part"] == "retrieval"]
    assert metric["queries"] == 100 and 0 <= metric["map_at_r"] <= 1
    assert "| faiss-flat | 1,000 × 128 | 5 |" in out


BEFORE = "045fa07"
"""The commit before the selection-then-sort ranking: its ``retrieval_metrics`` used ``topk``."""


def _has_commit(rev: str) -> bool:
    """True when the repository's git history holds ``rev`` (not in a copy without ``.git``)."""
    try:
        r = subprocess.run(
            ["git", "cat-file", "-e", f"{rev}^{{commit}}"],
            cwd=ROOT,
            capture_output=True,
            check=False,
        )
    except FileNotFoundError:  # no git
        return False
    return r.returncode == 0


def _retrieval(*extra: str) -> tuple[dict[str, dict], str]:
    args = ["--sizes", "200x1000", "--rounds", "1", "--threads", "1", *extra]
    found, out = _script("retrieval.py", *args)
    rows = {row["method"]: row for row in found}
    assert len(found) == len(rows)  # one call per method at the one size and round
    for row in rows.values():
        assert row["precision_at_1"] == rows["contrastkit"]["precision_at_1"]
        assert abs(row["map_at_r"] - rows["contrastkit"]["map_at_r"]) < 1e-6
        assert row["seconds"] > 0 and row["peak_mib"] >= 0
    assert "| 200 × 1,000 × 128 | contrastkit | 1 |" in out
    return rows, out


def test_retrieval_benchmark_agrees_with_pytorch_metric_learning():
    rows, _ = _retrieval()
    assert set(rows) == {"contrastkit", "pml"}


def test_retrieval_benchmark_agrees_with_the_code_before_the_new_ranking():
    if not _has_commit(BEFORE):
        pytest.skip(f"commit {BEFORE} (the code before) is not in this repository's history")
    rows, out = _retrieval("--methods", "contrastkit", "--before", BEFORE)
    assert set(rows) == {"before", "contrastkit"}
    assert "| 200 × 1,000 × 128 | before | 1 |" in out


def test_stats_benchmark_gives_the_figures_of_the_former_formula_and_less_memory():
    rows, out = _script("stats.py", "--shape", "40x3x16x16", "--rounds", "1")
    former, mine = rows  # one turn: float32 first
    assert (former["method"], mine["method"]) == ("float32", "contrastkit")
    for key in ("mean", "std"):  # float32 sums against exact ones: rounding apart
        assert max(abs(a - b) for a, b in zip(former[key], mine[key], strict=True)) < 1e-6
    assert all(row["seconds"] > 0 and row["peak_mib"] >= 0 for row in rows)
    assert "| 40 × 3 × 16 × 16 | contrastkit | 1 |" in out


def test_ranking_benchmark_ranks_a_block_as_topk_does_up_to_ties():
    rows, out = _script("ranking.py", "--size", "300x6000", "--rounds", "1", "--threads", "1")
    assert [row["method"] for row in rows] == ["topk", "contrastkit"]
    assert all(row["same_similarity_at_every_rank"] for row in rows)
    # a block of 300 queries (2**24 // 6,000 = 2,796 is more), depth the largest R
    assert rows[0]["block"] == 300 and 500 < rows[0]["depth"] < 700
    assert "| 300 × 6,000 |" in out


@pytest.mark.slow
def test_moco_benchmark_times_every_variant_and_sizes_the_queue():
    rows, out = _bench("moco.py")
    names = ["simclr", "moco", "moco-symmetric", "moco-65536", "mocov3"]
    assert [row["variant"] for row in rows] == names
    expected = {"variant", "batch", "queue_size", "proj_dim", "step_s", "vs_simclr"}
    expected |= {"state_rss_mib", "step_rss_mib", "queue_mib", "rounds", "threads"}
    expected |= {"cpu_capability", "machine"}
    for row in rows:
        assert set(row) == expected and row["batch"] == 8 and row["rounds"] == 1
        assert math.isfinite(row["step_s"]) and row["step_s"] > 0
        assert math.isfinite(row["vs_simclr"]) and row["vs_simclr"] > 0
        assert row["state_rss_mib"] > 0 and math.isfinite(row["step_rss_mib"])
    assert rows[0]["vs_simclr"] == 1.0
    queues = {row["variant"]: (row["queue_size"], row["queue_mib"]) for row in rows}
    assert queues["simclr"] == queues["mocov3"] == (0, 0.0)  # no queue
    for name, k in (("moco", 4096), ("moco-symmetric", 4096), ("moco-65536", 65536)):
        d = rows[names.index(name)]["proj_dim"]
        assert d == 128 and queues[name][0] == k
        # K keys of D float32, K int64 labels and the 8-byte pointer, in MiB to 0.1
        assert queues[name][1] == round((k * d * 4 + k * 8 + 8) / 2**20, 1)
    assert queues["moco-65536"][1] == 32.5  # 65,536 × 128 × 4 B = 32 MiB of keys
    assert "| moco-65536 | 65,536 |" in out
