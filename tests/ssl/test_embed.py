from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from glomssl.errors import GlomsslError
from glomssl.models.backbones import create_backbone
from glomssl.runs import save_weights
from glomssl.ssl.embed import EmbedConfig, load_backbone, run_embed


@pytest.fixture()
def weights(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    bb = create_backbone("resnet18")
    meta = {
        "arch": "resnet18",
        "method": "simsiam",
        "image_size": 32,
        "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25],
        "feature_dim": 512,
        "step": 0,
    }
    run = tmp_path / "run"
    save_weights(run / "backbone.safetensors", bb.trunk_state_dict(), meta)
    return run


def test_load_backbone_contract(weights: Path) -> None:
    enc, meta = load_backbone(weights)
    assert not enc.training and meta["feature_dim"] == 512
    x = torch.rand(3, 3, 32, 32)
    y = enc(x)
    assert y.shape == (3, 512)
    # normalisation happens inside: same as the trunk on manually normalised input
    manual = enc.trunk((x - 0.5) / 0.25)
    assert torch.allclose(y, manual, atol=1e-5)
    enc2, meta2 = load_backbone(weights / "backbone.safetensors", layers=(3, 4))
    assert enc2(x).shape == (3, 768) and meta2["feature_dim"] == 768


def test_embed_keeps_input_order_and_shape(weights: Path, tmp_path: Path, make_imgs) -> None:
    imgs = make_imgs(tmp_path / "in", n=5, size=36)
    out = tmp_path / "e.npz"
    res = run_embed(
        EmbedConfig(
            checkpoint=str(weights),
            input=str(tmp_path / "in"),
            out=str(out),
            batch_size=2,
            workers=0,
            device="cpu",
            quiet=True,
        )
    )
    d = np.load(out)
    assert list(d["paths"]) == [p.name for p in imgs]
    assert d["embeddings"].shape == (5, 512) and d["embeddings"].dtype == np.float32
    assert res["image_size"] == 32
    # embedding one image alone gives the same vector as in the batch (eval mode, no batch stats)
    enc, _ = load_backbone(weights)
    from glomssl.ssl.data import load_rgb_tensor
    from glomssl.ssl.transforms import eval_transform

    x = eval_transform(32)(load_rgb_tensor(imgs[3]).float() / 255)[None]
    assert np.allclose(enc(x).detach().numpy()[0], d["embeddings"][3], atol=1e-4)


def test_embed_errors(tmp_path: Path, weights: Path) -> None:
    with pytest.raises(GlomsslError, match="no backbone.safetensors"):
        load_backbone(tmp_path)
    with pytest.raises(GlomsslError, match=".npz"):
        EmbedConfig(checkpoint=str(weights), input="x", out="e.txt").validate()
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(GlomsslError, match="not a safetensors"):
        load_backbone(tmp_path / "junk.safetensors")
