"""benchmarks/gan.py --loop (the end-to-end mode used for GPU rows) runs and reports real numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gan_benchmark_loop_mode_reports_training_speed(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gan.py"), "--loop", "--cfg", "small",
           "--resolution", "32", "--device", "cpu", "--train-batch", "4", "--gen-batch", "4",
           "--train-kimg", "0.008"]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    assert row["benchmark"] == "gan-loop" and row["cfg"] == "small" and row["resolution"] == 32
    assert row["generate_images_per_s"] > 0
    assert row["train_sec_per_kimg"] > 0
    assert abs(row["train_kimg_per_hour"] * row["train_sec_per_kimg"] - 3600) < 3600 * 0.01
