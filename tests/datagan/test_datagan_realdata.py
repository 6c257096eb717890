"""Real data end to end for the label factory: benchmarks/datagan_realdata.py on tiny settings.

Slow (CPU minutes): a 64 px GAN trained for a few steps on the real training slides' crops, 4 real
crops with their masks projected into W+, the labeler, 20 generated pairs and two short segmenter
trainings. It checks the plumbing on real data (held-out slides, masks, manifest, Dice in range), not
the method's quality: that is `python benchmarks/datagan_realdata.py`, recorded in BENCHMARKS.md.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.realdata
def test_datagan_realdata_pipeline_on_glomeruli(shared_data: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    env = {**os.environ, "GLOMSSL_SHARED_DATA": str(shared_data), "OMP_NUM_THREADS": "1"}
    args = ["--kimg", "0.032", "--n", "20", "--annotated", "4", "--project-steps", "5"]
    args += ["--seg-steps", "20", "--work", str(work)]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "datagan_realdata.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = list(csv.DictReader(open(shared_data / "glomeruli" / "labels.csv", encoding="utf-8")))
    train_slides = {r["slide"] for r in rows} - set(out["test_slides"])
    assert out["test_crops"] + out["train_crops"] == len(rows)
    assert out["test_crops"] == sum(r["slide"] in out["test_slides"] for r in rows)
    # the GAN saw only the training slides' crops
    gan_data = sorted(p.stem for p in (work / "gan_data").glob("*.png"))
    by_stem = {Path(r["image"]).stem: r["slide"] for r in rows}
    assert len(gan_data) == out["train_crops"]
    assert {by_stem[s] for s in gan_data} <= train_slides
    assert out["gan_kimg"] == pytest.approx(0.032)
    assert out["synthetic_pairs"] == 20
    manifest = [json.loads(x) for x in (work / "syn" / "manifest.jsonl").open()]
    assert len(manifest) == 20
    for m in manifest[:5]:
        mask = np.asarray(Image.open(work / "syn" / m["mask"]))
        assert mask.shape == (64, 64) and set(np.unique(mask)) <= {0, 1}
    for key in ("dice_test_seg_on_synthetic", "dice_test_seg_on_real"):
        assert 0.0 <= out[key] <= 1.0
    assert 0.5 < out["real_foreground_fraction"] < 0.95  # crops centred on glomeruli
