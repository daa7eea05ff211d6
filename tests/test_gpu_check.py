"""The GPU check's CPU mode runs end to end (``benchmarks/gpu_check.sh --device cpu``).

Its logic then runs in every ``make test``, so the command is known to work the day a GPU is
there. The nested pytest runs one file of the device tests (the whole set runs in this suite
itself); the benchmark runs at tiny sizes.
"""

import json
import os
import subprocess
from pathlib import Path
from xml.etree import ElementTree

ROOT = Path(__file__).resolve().parents[1]
FILES = ["bench.log", "env.txt", "gpu.jsonl", "summary.txt", "tables.md", "tests.log", "tests.xml"]


def _check(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        [
            "bash",
            str(ROOT / "benchmarks" / "gpu_check.sh"),
            "--device",
            "cpu",
            "--out",
            str(out),
            *args,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_gpu_check_runs_end_to_end_on_the_cpu(tmp_path):
    out = tmp_path / "check"
    done = _check(out, "--", "tests/devices/test_losses_on_device.py")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == FILES

    # the tests ran; every CUDA case was skipped, with the reason
    cases = list(ElementTree.parse(out / "tests.xml").getroot().iter("testcase"))
    cuda = [c for c in cases if "cuda" in c.get("name", "")]
    assert cases and cuda and len(cuda) < len(cases)
    for case in cases:
        assert case.find("failure") is None and case.find("error") is None, case.get("name")
    for case in cuda:
        skip = case.find("skipped")
        assert skip is not None and "no CUDA device" in skip.get("message", ""), case.get("name")

    # one JSON line per measurement: every loss method at both sizes, agreeing on the value
    records = [json.loads(line) for line in (out / "gpu.jsonl").read_text().splitlines()]
    assert records[0]["part"] == "env" and records[0]["device"] == "cpu"
    losses = [r for r in records if r["part"] == "losses"]
    assert {(r["method"], r["views"]) for r in losses if "seconds" in r} == {
        (m, v)
        for m in ["ck-tiled@32", "ck-dense", "hl-dense", "pml-supcon", "pml-ntxent",
                  "ck-infonce-tiled@32", "ck-infonce-dense", "infonce-pytorch"]
        for v in (64, 128)
    }  # fmt: skip
    for r in losses:
        same = [x["loss"] for x in losses if (x["group"], x["views"]) == (r["group"], r["views"])]
        assert max(same) - min(same) < 1e-5 * max(same)
        assert r["seconds"] > 0 and r["bound_seconds"] > 0 and r["peak_mib"] is None
    steps = {r["precision"]: r for r in records if r["part"] == "steps"}
    assert steps["fp32"]["images_per_s"] > 0 and steps["fp32"]["batch"] == 8
    assert steps["fp16"]["skipped"].startswith("precision fp16 needs CUDA")

    # the tables and the summary
    tables = (out / "tables.md").read_text()
    assert "| ntxent | ck-tiled@32 | 128 |" in tables and "| small_cnn | 32 | fp32 | 8 |" in tables
    summary = (out / "summary.txt").read_text()
    assert summary in done.stdout
    assert "tests (pytest -m gpu): " in summary and " 0 failed, 0 errors" in summary
    assert "skipped" in summary and "× no CUDA device" in summary
    assert "losses: 16 measured, 0 skipped" in summary
    assert summary.rstrip().endswith("result: PASS (pytest exit 0, benchmarks exit 0)")


def test_gpu_check_refuses_cuda_without_a_gpu_and_bad_options(tmp_path):
    import torch

    if not torch.cuda.is_available():
        done = subprocess.run(
            ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--out", str(tmp_path / "c")],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 2
        assert "error: --device cuda, but torch sees no CUDA device" in done.stderr
    bad = _check(tmp_path / "d", "--minutes", "soon")
    assert bad.returncode == 2 and "--minutes must be a whole number, got 'soon'" in bad.stderr
