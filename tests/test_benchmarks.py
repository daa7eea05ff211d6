import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_precision_benchmark_runs_and_reports_both_precisions():
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    args = ["--batch", "8", "--rounds", "1", "--extract", "32", "--threads", "1"]
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "precision.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert [row["precision"] for row in rows] == ["fp32", "bf16"]
    assert rows[0]["step_speedup"] == 1.0 and all(row["step_s"] > 0 for row in rows)
    assert "| bf16 |" in r.stdout
