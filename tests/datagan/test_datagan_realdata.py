"""Real data end to end for the label factory: benchmarks/datagan_realdata.py on tiny settings.

Slow (CPU minutes): a 64 px GAN trained for a few steps on the real training slides' crops, 4 real
crops with their masks projected into W+, the labeler, 20 generated pairs, and `glomssl finetune seg`
on the real crops, the synthetic pairs and both. It checks the plumbing on real data (held-out slides,
masks, manifest, scores in range), not the method's quality: that is
`python benchmarks/datagan_realdata.py`, recorded in docs/experiments/segmenter.md.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from _proc import check, run_proc
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.realdata
def test_datagan_realdata_pipeline_on_glomeruli(shared_data: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    env = {"GLOMSSL_SHARED_DATA": str(shared_data)}
    args = ["--kimg", "0.032", "--n", "20", "--annotated", "4", "--project-steps", "5"]
    args += ["--steps", "4", "--base", "8", "--no-aidpath", "--work", str(work)]
    script = str(ROOT / "benchmarks" / "datagan_realdata.py")
    proc = check(run_proc([sys.executable, script, *args], timeout=1800, env=env))
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
    res = out["results"]
    assert set(res) == {f"N4-{arm}-s4-b8" for arm in ("real", "synthetic", "both")}
    syn = res["N4-synthetic-s4-b8"]
    assert syn["gan_kimg"] == pytest.approx(0.032) and syn["synthetic_pairs"] == 20
    manifest = [json.loads(x) for x in (work / "ann_N4" / "syn" / "manifest.jsonl").open()]
    assert len(manifest) == 20
    for m in manifest[:5]:
        mask = np.asarray(Image.open(work / "ann_N4" / "syn" / m["mask"]))
        assert mask.shape == (64, 64) and set(np.unique(mask)) <= {0, 1}
    for entry in res.values():
        t = entry["test"]
        assert 0.0 <= t["dice"] <= 1.0 and 0.0 <= t["bf1"] <= 1.0
        assert 0.8 < t["dice_all_foreground"] < 0.95  # crops centred on their glomerulus
    both = json.loads((work / "runs" / "N4-both-s4-b8" / "model.json").read_text())
    assert both["train_data"]["train"]["synthetic"] == 20
