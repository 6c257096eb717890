"""Numbers that must describe what was made (audit 4): the manifest of a ``gan generate`` folder filled
by several runs, FID/KID logged by ``gan train`` against a small real set, and the projection error
that ``datagan project`` reports."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from glomssl.datagan import project as pj
from glomssl.datagan.dataset import ImageDataset, make_dataset
from glomssl.datagan.factory import to_uint8
from glomssl.datagan.features import load_latent, load_network, synthesize_latent
from glomssl.datagan.generate import GenerateConfig, run_generate
from glomssl.datagan.metrics import MetricState, run_gan_metrics
from glomssl.datagan.networks import create_discriminator, create_generator
from glomssl.datagan.snapshot import save_snapshot
from glomssl.datagan.train import run_gan_train
from glomssl.datagan.train_config import GanTrainConfig
from glomssl.fsutil import sha256_file
from glomssl.manifest import read_manifest
from glomssl.runs import read_metrics

RES = 32


def _snapshot_run(run: Path, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    G = create_generator("small", RES, channel_max=8)
    D = create_discriminator("small", RES, channel_max=8)
    save_snapshot(run / "snapshot-000000.safetensors", G, D, copy.deepcopy(G), 0.0, 0)
    return G


# -- F1: several --seeds runs into one --out: the manifest lists every image --------------------------


def test_generate_runs_into_one_out_add_up_in_the_manifest(tmp_path: Path) -> None:
    run, out = tmp_path / "run", tmp_path / "fakes"
    _snapshot_run(run)
    want = {"0-2": [0, 1, 2], "3-4": [0, 1, 2, 3, 4], "2,1": [0, 1, 2, 3, 4]}
    for seeds, listed in want.items():  # the last run's seeds are there already: nothing changes
        run_generate(GenerateConfig(network=str(run), seeds=seeds, out=str(out), quiet=True))
        rows = read_manifest(out / "manifest.jsonl")
        assert [r["seed"] for r in rows] == listed, seeds
        for r in rows:
            f = out / r["path"]
            assert f.is_file() and r["sha256"] == sha256_file(f)
            assert r["trunc"] == 1.0 and r["noise_mode"] == "const"
    assert sorted(p.name for p in out.glob("seed*.png")) == [f"seed{s:04d}.png" for s in range(5)]


# -- F2: FID/KID during gan train cap --metric-num at the real images, like gan metrics ---------------


def _encoder_run(path: Path) -> None:
    """A `glomssl pretrain`-style backbone (resnet18 trunk, random weights) for --metric-encoder."""
    from glomssl.models.backbones import ResNetTrunk
    from glomssl.runs import save_weights

    torch.manual_seed(0)
    trunk = ResNetTrunk("resnet18")
    meta = {"arch": "resnet18", "image_size": RES, "mean": [0.5] * 3, "std": [0.25] * 3}
    save_weights(path / "backbone.safetensors", trunk.trunk_state_dict(), meta)


def _train_cfg(data: Path, out: Path, **kw: object) -> GanTrainConfig:
    base: dict[str, object] = dict(
        data=[str(data)],
        out=str(out),
        resolution=RES,
        networks="small",
        channel_max=8,
        batch_size=4,
        kimg=0.004,
        snap=0.004,
        tick=0.004,
        grid=2,
        workers=0,
        accelerator="cpu",
        pl_weight=0.0,
        quiet=True,
    )
    base.update(kw)
    return GanTrainConfig(**base)  # type: ignore[arg-type]


def test_metric_state_does_not_repeat_real_images(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    encoder = torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    )
    ds = make_dataset(_train_cfg(images, tmp_path / "m"))
    assert isinstance(ds, ImageDataset) and len(ds) == 8
    state = MetricState(encoder, ds, num=20, device="cpu")
    assert state.num == 8 and state.requested_num == 20
    assert state.real.shape == (8, 6)
    assert len(np.unique(state.real, axis=0)) == 8  # eight distinct real images, none repeated
    assert capsys.readouterr().err.count("--metric-num 20 is more than the 8") == 1


def test_train_logged_fid_kid_match_gan_metrics_at_the_same_num(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _encoder_run(tmp_path / "pre")
    run = tmp_path / "run"
    cfg = _train_cfg(images, run, metric_encoder=str(tmp_path / "pre"), metric_num=20)
    run_gan_train(cfg)
    assert capsys.readouterr().err.count("--metric-num 20 is more than the 8") == 1
    logged = [r for r in read_metrics(run / "metrics.jsonl") if "fid_enc" in r]
    assert logged and logged[-1]["metric_num"] == 8
    scored = run_gan_metrics(
        str(run), [str(images)], metric_encoder=str(tmp_path / "pre"), num=20, device="cpu"
    )
    assert scored["num"] == 8
    assert scored["kimg"] == pytest.approx(logged[-1]["kimg"])
    assert scored["fid_enc"] == pytest.approx(logged[-1]["fid_enc"], rel=1e-4, abs=1e-6)
    assert scored["kid_enc"] == pytest.approx(logged[-1]["kid_enc"], rel=1e-4, abs=1e-6)


# -- F3: datagan project reports the error of what it saves ---------------------------------------


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))


def test_project_image_terms_are_those_of_the_returned_latent() -> None:
    torch.manual_seed(0)
    G = load_network(create_generator("small", RES))
    target = torch.rand(1, 3, RES, RES) * 2 - 1
    ws, noise, terms = pj.project_image(G, target, steps=8, lr=0.05, optimize_noise=True)
    again, _ = synthesize_latent(G, {"ws": ws, "noise": noise})  # the terms as optimised: unclamped
    assert terms["mse"] == pytest.approx(_mse(again.numpy(), target.numpy()), abs=1e-5)
    ssim = 1 - float(pj.ms_ssim(again, target).mean())
    assert terms["1-ms_ssim"] == pytest.approx(ssim, abs=1e-5)


def test_reported_projection_mse_is_that_of_the_saved_latent(tmp_path: Path) -> None:
    run = tmp_path / "run"
    G = load_network(_snapshot_run(run, seed=1))
    imgs = tmp_path / "real"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        arr = np.full((RES, RES, 3), 230, np.uint8)
        arr[8:20, 10:24] = rng.integers(60, 200, 3, dtype=np.uint8)
        Image.fromarray(arr).save(imgs / f"g{i}.png")
    out = tmp_path / "ann"
    cfg = pj.ProjectConfig(network=str(run), images=str(imgs), out=str(out), steps=6, quiet=True)
    res = pj.run_datagan_project(cfg)
    assert res["projected"] == 2
    rows = [json.loads(x) for x in (out / "projection.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for r in rows:
        stem = Path(r["image"]).stem
        real = np.asarray(Image.open(out / f"{stem}.png").convert("RGB"), np.float64) / 127.5 - 1
        lat = load_latent(out / f"{stem}.npz", G)
        img, _ = synthesize_latent(G, lat)
        recon = img[0].clamp(-1, 1).permute(1, 2, 0).double().numpy()
        assert r["mse"] == pytest.approx(_mse(recon, real), abs=1e-4)
        assert float(lat["mse"]) == pytest.approx(r["mse"], abs=1e-7)
        png = np.asarray(Image.open(out / "reconstructions" / f"{stem}.png").convert("RGB"))
        assert np.array_equal(png, to_uint8(img[0]))  # the PNG is that image, rounded to 8 bits
