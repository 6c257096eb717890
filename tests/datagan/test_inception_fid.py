"""Standard Inception FID/KID from a local weights file: the encoder (.pth and .safetensors, pool3
features, determinism), bad files, ``gan train --metric-inception`` and ``glomssl gan metrics``.

The weights are a randomly initialised torchvision inception_v3 saved the way torchvision ships it
(with ``AuxLogits.*`` and ``fc.*``), so nothing is downloaded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from glomssl.datagan.metrics import MetricState, fid_from_features, kid_from_features
from glomssl.datagan.train import GanTrainConfig, make_dataset, run_gan_train
from glomssl.errors import GlomsslError
from glomssl.runs import read_metrics

torchvision = pytest.importorskip("torchvision")


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A random inception_v3 state dict as .pth and .safetensors, plus one missing keys."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    for mod in net.modules():  # He init keeps the random net's pool3 features near 1 in size
        if isinstance(mod, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
    sd = net.state_dict()
    assert any(k.startswith("AuxLogits.") for k in sd) and "fc.weight" in sd
    folder = tmp_path_factory.mktemp("inception")
    out = {"pth": folder / "inception_v3.pth", "st": folder / "inception_v3.safetensors"}
    torch.save(sd, out["pth"])
    save_file({k: v.contiguous() for k, v in sd.items()}, str(out["st"]))
    partial = {k: v for k, v in sd.items() if not k.startswith("Mixed_7c.")}
    out["partial"] = folder / "partial.pth"
    torch.save(partial, out["partial"])
    out["corrupt"] = folder / "corrupt.pth"
    out["corrupt"].write_bytes(b"this is not a torch file")
    out["corrupt_st"] = folder / "corrupt.safetensors"
    out["corrupt_st"].write_bytes(b"\x00\x01 nope")
    return out


def _cfg(data: Path, out: Path, **kw: object) -> GanTrainConfig:
    base: dict[str, object] = dict(
        data=[str(data)],
        out=str(out),
        resolution=32,
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
        ada_interval=1,
        quiet=True,
    )
    base.update(kw)
    return GanTrainConfig(**base)  # type: ignore[arg-type]


def test_inception_encoder_features_and_fid(weights: dict[str, Path]) -> None:
    from glomssl.datagan.inception import InceptionEncoder

    enc = InceptionEncoder(str(weights["pth"]), batch=4)
    assert not enc.model.training
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, 3, 32, 32, generator=g)
    y = torch.rand(4, 3, 32, 32, generator=g) * 0.3 + 0.7  # another, brighter image set
    fx = enc.features(x)
    assert fx.shape == (4, 2048) and fx.dtype == np.float32 and np.isfinite(fx).all()
    np.testing.assert_array_equal(fx, enc.features(x.clone()))  # deterministic (eval mode)
    # the .safetensors copy of the same tensors gives the same features
    np.testing.assert_allclose(
        InceptionEncoder(weights["st"]).features(x[:2]), fx[:2], rtol=1e-5, atol=1e-6
    )
    fy = enc.features(y)
    assert fid_from_features(fx, fx) == pytest.approx(0.0, abs=1e-3)
    assert fid_from_features(fx, fy) > 1.0
    assert np.isfinite(kid_from_features(fx, fy, subset_size=4, num_subsets=5))


@pytest.mark.parametrize("key", ["corrupt", "corrupt_st", "partial"])
def test_bad_weights_files_name_the_file(weights: dict[str, Path], key: str) -> None:
    from glomssl.datagan.inception import InceptionEncoder

    with pytest.raises(GlomsslError) as info:
        InceptionEncoder(str(weights[key]))
    msg = str(info.value)
    assert str(weights[key]) in msg and "\n" not in msg and "inception_v3" in msg


def test_missing_and_pickled_object_files(weights: dict[str, Path], tmp_path: Path) -> None:
    from glomssl.datagan.inception import InceptionEncoder

    with pytest.raises(GlomsslError, match="does not exist"):
        InceptionEncoder(str(tmp_path / "nope.pth"))
    # arbitrary pickled objects are refused (weights_only loading), not executed
    evil = tmp_path / "obj.pth"
    torch.save({"model": torchvision.models.inception_v3}, evil)
    with pytest.raises(GlomsslError, match="obj.pth"):
        InceptionEncoder(str(evil))
    # the config checks the file up front
    cfg = GanTrainConfig(data=["x"], out="y", metric_inception=str(tmp_path / "nope.pth"))
    with pytest.raises(GlomsslError, match="--metric-inception .*nope.pth does not exist"):
        cfg.validate()


def test_gan_train_logs_inception_and_encoder_metrics(
    weights: dict[str, Path], images: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    encoder = torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    )
    # both feature spaces at once, through MetricState directly
    ds = make_dataset(_cfg(images, run))
    state = MetricState(encoder, ds, num=4, device="cpu", inception=str(weights["pth"]))
    assert state.reals["inception"].shape == (4, 2048) and state.real.shape == (4, 6)
    # and through the training loop (the encoder option takes a pretrain run, so Inception only)
    run_gan_train(_cfg(images, run, metric_inception=str(weights["pth"]), metric_num=8))
    last = read_metrics(run / "metrics.jsonl")[-1]
    assert np.isfinite(last["fid_inception"]) and last["fid_inception"] > 0
    assert np.isfinite(last["kid_inception"]) and "fid_enc" not in last
    from glomssl.datagan.snapshot import load_snapshot

    scores = state.evaluate(load_snapshot(run)["G_ema"])
    assert set(scores) == {"fid_enc", "kid_enc", "fid_inception", "kid_inception"}


def test_gan_metrics_command(weights: dict[str, Path], images: Path, tmp_path: Path) -> None:
    from glomssl.cli import cli

    run = tmp_path / "run"
    run_gan_train(_cfg(images, run, kimg=0))
    runner = CliRunner()
    out = tmp_path / "m" / "metrics.json"
    args = ["gan", "metrics", "--network", str(run), "--data", str(images), "--num", "8"]
    res = runner.invoke(
        cli, [*args, "--metric-inception", str(weights["st"]), "--device", "cpu", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    line = json.loads(res.output.strip().splitlines()[-1])
    assert line["num"] == 8 and line["network"].endswith("snapshot-000000.safetensors")
    assert np.isfinite(line["fid_inception"]) and np.isfinite(line["kid_inception"])
    assert json.loads(out.read_text()) == line
    # a missing weights file: one-line error, exit code 2
    res = runner.invoke(cli, [*args, "--metric-inception", str(tmp_path / "none.pth")])
    assert res.exit_code == 2
    assert res.output.strip().startswith("Error:") and len(res.output.strip().splitlines()) == 1
    assert "none.pth" in res.output and "Traceback" not in res.output
    # no feature space at all
    res = runner.invoke(cli, args)
    assert res.exit_code == 2 and "--metric-inception" in res.output
