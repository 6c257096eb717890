"""The segmenter's demo step on the shipped aidpath tiles (a short run: the plumbing, not the score)."""

from __future__ import annotations

from pathlib import Path

import pytest

from glomssl.finetune.segmenter.demo import run_demo_step


@pytest.mark.slow
def test_demo_step_trains_and_segments_the_held_back_tile(tmp_path: Path) -> None:
    res = run_demo_step(tmp_path, minutes=2, max_steps=3)
    assert res["held_out"] == "10003.jpg" and res["train_tiles"] == 11 and res["steps"] == 3
    assert 0.0 <= res["dice"] <= 1.0 and 0.0 < res["dice_all_foreground"] < 0.4
    assert Path(res["overlay"]).is_file() and Path(res["mask"]).is_file()
    assert abs(res["scale"] - 96 / 1024) < 1e-9
