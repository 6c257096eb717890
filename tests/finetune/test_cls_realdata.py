"""The linear protocol on the 676 real glomerulus crops (GS vs nonGS, 21 slides), in seconds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cls_testdata import make_backbone

from glomssl.finetune.classifier.protocol import FinetuneClsConfig, run_finetune_cls


@pytest.mark.realdata
@pytest.mark.slow
def test_linear_probe_on_real_crops_beats_chance(shared_data: Path, tmp_path: Path) -> None:
    """A random-init ResNet-18 (``pretrain --max-steps 0``) + a linear layer, slide-grouped 5-fold.

    Even untrained, the trunk's pooled features carry stain and texture statistics that separate
    sclerosed glomeruli (BENCHMARKS.md measured about 0.89 with all labels at 64 px): the margin
    asserted here is well above chance (0.5) but far below that, so it only fails when the data,
    the grouping or the protocol is broken.
    """
    labels = shared_data / "glomeruli" / "labels.csv"
    backbone = make_backbone(tmp_path / "random", size=64)
    res = run_finetune_cls(
        FinetuneClsConfig(
            data=str(labels), out=str(tmp_path / "run"), backbone=str(backbone), group="slide",
            folds=5, epochs=60, export=False, workers=2, quiet=True,
        )
    )  # fmt: skip
    assert res["n_images"] == 676 and res["n_groups"] == 21 and res["counts"]["GS"] == 152
    assert res["mean"]["balanced_accuracy"] > 0.75, res["mean"]
    assert res["mean"]["auc"] > 0.8
    per_fold = json.loads((tmp_path / "run" / "results.json").read_text())["per_fold"]
    assert all(f["balanced_accuracy"] > 0.6 for f in per_fold)  # no fold at chance
    assert sum(f["n"] for f in per_fold) == 676
