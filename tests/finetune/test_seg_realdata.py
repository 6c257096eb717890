"""Real data end to end: benchmarks/segment_realdata.py on tiny settings (the plumbing, not quality).

The Tuft/GS tasks are built from ../shared/data/glomeruli (each crop annotated for ONE task), whole
slides held out, a dynamic segmenter trained for a few steps, scored on the test slides beside the
priors and run tiled on the 12 real aidpath fields. The measured numbers come from the full script
(docs/experiments/segmenter.md).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
from _proc import check, run_proc

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.realdata
def test_segment_realdata_tiny(shared_data: Path, tmp_path: Path) -> None:
    work = tmp_path / "w"
    env = {"GLOMSSL_SHARED_DATA": str(shared_data)}
    args = ["--work", str(work), "--steps", "4", "--base", "8", "--models", "dynamic"]
    script = str(ROOT / "benchmarks" / "segment_realdata.py")
    p = check(run_proc([sys.executable, script, *args], timeout=1800, env=env))
    out = json.loads(p.stdout.strip().splitlines()[-1])
    train = list(csv.DictReader(open(work / "train.csv", encoding="utf-8")))
    test = list(csv.DictReader(open(work / "test.csv", encoding="utf-8")))
    assert len(train) + len(test) == 676 and len(test) == out["test_crops"]
    assert not {r["slide"] for r in train} & {r["slide"] for r in test}  # slides never straddle
    assert {r["slide"] for r in test} == set(out["test_slides"])
    for rows in (train, test):
        assert {r["task"] for r in rows} == {"Tuft", "GS"}
        gs_neg = [r for r in rows if r["task"] == "GS" and r["label"] == "nonGS"]
        assert gs_neg and all(r["mask"].endswith("empty_224.png") for r in gs_neg)
    res = out["results"]["dynamic-s4-b8-64px-seed0"]
    t = res["test"]["per_class"]
    assert 0.8 < t["Tuft"]["dice_all_foreground"] < 0.95  # the saturated prior on centred crops
    assert t["Tuft"]["dice_centred_disk"] > 0.85
    assert res["test"]["n_GS_crops"] >= 20
    tiled = res["aidpath_tiled"]
    assert tiled["tiles"] == 12 and tiled["dice_all_foreground"] < 0.3  # glomeruli 2-20% of a tile
    assert 0.0 <= tiled["dice"] <= 1.0
