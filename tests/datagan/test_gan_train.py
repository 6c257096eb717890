"""``gan train``: a tiny real training run (files, metrics, G_ema, resume), --kimg 0 through the CLI,
slide data, encoder FID/KID, bad input, and a real 2-process DDP step on CPU with gloo."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from glomssl.cli.gan import gan
from glomssl.datagan.metrics import MetricState, fid_from_features, kid_from_features
from glomssl.datagan.snapshot import list_snapshots, load_snapshot
from glomssl.datagan.train import (
    GanTrainConfig,
    SlideDataset,
    ema_beta,
    iter_images,
    make_dataset,
    run_gan_train,
    update_ema,
)
from glomssl.errors import GlomsslError
from glomssl.runs import read_metrics


def _cfg(data: Path, out: Path, **kw: object) -> GanTrainConfig:
    base: dict[str, object] = dict(
        data=[str(data)],
        out=str(out),
        resolution=32,
        networks="small",
        channel_max=8,
        batch_size=4,
        kimg=0.008,
        snap=0.004,
        tick=0.004,
        grid=2,
        workers=0,
        accelerator="cpu",
        pl_weight=2.0,
        ada_interval=1,
        quiet=True,
    )
    base.update(kw)
    return GanTrainConfig(**base)  # type: ignore[arg-type]


def test_tiny_run_writes_everything_and_resumes(images: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = run_gan_train(_cfg(images, run))
    assert first["kimg"] == pytest.approx(0.008)
    for name in ("config.yaml", "metrics.jsonl", "reals.png", "fakes-000000.png"):
        assert (run / name).is_file(), name
    text = (run / "config.yaml").read_text()
    assert "resolution: 32" in text and "# resolved gamma:" in text
    from glomssl.config import build_config

    assert (
        build_config(GanTrainConfig, run / "config.yaml").channel_max == 8
    )  # reusable as --config
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["kimg"] for r in rows] == [0.004, 0.008]
    for key in (
        "loss_G",
        "loss_D",
        "r1_penalty",
        "pl_penalty",
        "augment_p",
        "sec_per_kimg",
        "rss_gb",
    ):
        assert key in rows[0], key
    assert all(np.isfinite(r["loss_G"]) and np.isfinite(r["loss_D"]) for r in rows)
    snap = load_snapshot(run)
    assert snap["meta"]["cur_nimg"] == 8 and snap["meta"]["config"]["resolution"] == 32
    # G_ema trails G: close to it, but an average, not a copy
    g0 = dict(snap["G"].named_parameters())
    ema = dict(snap["G_ema"].named_parameters())
    w = "synthesis_net.blocks.0.conv1.weight"
    assert not torch.equal(ema[w], g0[w])
    assert float((ema[w] - g0[w]).detach().abs().max()) < 0.5
    assert "opt_G.0.exp_avg" in snap["tensors"] and "opt_D.0.exp_avg" in snap["tensors"]
    with pytest.raises(GlomsslError, match="--resume"):
        run_gan_train(_cfg(images, run))
    with pytest.raises(GlomsslError, match="other network settings"):
        run_gan_train(_cfg(images, run, channel_max=4, kimg=0.016, resume=True))
    second = run_gan_train(_cfg(images, run, kimg=0.016, resume=True))
    assert second["kimg"] == pytest.approx(0.016)
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["kimg"] for r in rows] == [0.004, 0.008, 0.012, 0.016]
    assert load_snapshot(run)["meta"]["cur_nimg"] == 16


def test_ema_beta_and_update() -> None:
    assert ema_beta(32, 10**9, 10.0, 0.05) == pytest.approx(0.5 ** (32 / 10000))
    assert ema_beta(32, 1000, 10.0, 0.05) == pytest.approx(0.5 ** (32 / 50))  # ramp-up early
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = a.weight.detach().clone()
    update_ema(a, b, 0.75)
    torch.testing.assert_close(a.weight, 0.75 * before + 0.25 * b.weight.detach())


def test_kimg_zero_and_generate_through_the_cli(images: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    run = tmp_path / "run0"
    args = [
        "train",
        "--data",
        str(images),
        "--out",
        str(run),
        "--resolution",
        "32",
        "--cfg",
        "small",
    ]
    res = runner.invoke(
        gan, [*args, "--channel-max", "8", "--kimg", "0", "--workers", "0", "--quiet"]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.output.strip().splitlines()[-1])["kimg"] == 0
    assert [p.name for p in list_snapshots(run)] == ["snapshot-000000.safetensors"]
    assert not (run / "metrics.jsonl").exists()
    res = runner.invoke(
        gan,
        [
            "generate",
            "--network",
            str(run),
            "--seeds",
            "0-2",
            "--out",
            str(tmp_path / "g"),
            "--quiet",
        ],
    )
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "g").glob("*.png")) == [
        f"seed000{i}.png" for i in range(3)
    ]
    res = runner.invoke(
        gan, ["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r")]
    )
    assert res.exit_code == 2 and "Error:" in res.output and "Traceback" not in res.output
    dry = runner.invoke(gan, [*args, "--dry-run"])
    assert dry.exit_code == 0 and "resolution: 32" in dry.output and not (tmp_path / "r").exists()


def _bomb_png(path: Path, side: int = 20000) -> None:
    """A PNG whose header claims side x side pixels (a decompression bomb) in a few bytes."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


def test_unreadable_images_and_bombs_are_skipped_and_listed(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    _bomb_png(images / "bomb.png")
    ds = make_dataset(_cfg(images, tmp_path / "x"))
    assert len(ds) == 8 and sorted(Path(p).name for p, _ in ds.skipped) == [
        "bomb.png",
        "broken.png",
    ]
    run = tmp_path / "skiprun"
    run_gan_train(_cfg(images, run, kimg=0))
    rows = [json.loads(line) for line in (run / "skipped.jsonl").read_text().splitlines()]
    assert sorted(Path(r["path"]).name for r in rows) == ["bomb.png", "broken.png"]
    assert any("DecompressionBomb" in r["reason"] for r in rows)
    assert "skipped 2 of 10 images" in capsys.readouterr().err
    empty = tmp_path / "only-bad"
    empty.mkdir()
    (empty / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(GlomsslError, match="no readable image"):
        make_dataset(_cfg(empty, tmp_path / "y"))


def test_bad_options_raise(images: Path, tmp_path: Path) -> None:
    with pytest.raises(GlomsslError, match="divisible"):
        _cfg(images, tmp_path / "x", devices=3).validate()
    with pytest.raises(GlomsslError, match="--resolution"):
        _cfg(images, tmp_path / "x", resolution=100).validate()


def test_slides_feed_random_tissue_patches(tmp_path: Path) -> None:
    tifffile = pytest.importorskip("tifffile")
    img = np.full((512, 512, 3), 242, np.uint8)
    img[100:400, 100:400] = (180, 60, 150)
    slide = tmp_path / "slide.tif"
    tifffile.imwrite(slide, img, tile=(256, 256), photometric="rgb")
    cfg = _cfg(slide, tmp_path / "srun", kimg=0.004, snap=0.004)
    ds = make_dataset(cfg)
    assert isinstance(ds, SlideDataset)
    patches = list(iter_images(ds, 3))
    assert all(p.shape == (3, 32, 32) and p.dtype == torch.uint8 for p in patches)
    assert abs(float(patches[0][1].float().mean()) - 60) < 20  # green channel of the tissue colour
    out = run_gan_train(cfg)
    assert out["kimg"] == pytest.approx(0.004) and list_snapshots(tmp_path / "srun")


def test_fid_and_kid_in_an_encoder_feature_space(images: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 8))
    b = rng.normal(size=(400, 8))
    assert fid_from_features(a, b) < 0.5 and abs(kid_from_features(a, b, 200, 20)) < 0.05
    shifted = b + 1.0
    # against the textbook formula with a matrix square root
    import scipy.linalg

    c = b @ rng.normal(size=(8, 8)) * 0.5 + 0.3
    s1, s2 = np.cov(a, rowvar=False), np.cov(c, rowvar=False)
    ref = np.square(a.mean(0) - c.mean(0)).sum() + np.trace(
        s1 + s2 - 2 * np.real(scipy.linalg.sqrtm(s1 @ s2))
    )
    assert fid_from_features(a, c) == pytest.approx(ref, rel=1e-6)
    assert fid_from_features(a, shifted) > 6.0 and kid_from_features(a, shifted, 200, 20) > 0.1
    # a tiny stand-in for a glomssl pretrain backbone: (B, 3, H, W) in [0, 1] -> (B, 6)
    encoder = torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    )
    ds = make_dataset(_cfg(images, tmp_path / "m"))
    state = MetricState(encoder, ds, num=16, device="cpu")
    assert state.real.shape == (8, 6)  # the 8 images once each: repeats would bias FID/KID
    run_gan_train(_cfg(images, tmp_path / "m", kimg=0))
    scores = state.evaluate(load_snapshot(tmp_path / "m")["G_ema"])
    assert (
        np.isfinite(scores["fid_enc"]) and scores["fid_enc"] > 0 and np.isfinite(scores["kid_enc"])
    )


def test_two_process_ddp_gan_step_on_cpu(images: Path, tmp_path: Path) -> None:
    """Real DDP: two gloo processes, gradients averaged, ranks checked to hold the same G."""
    run = tmp_path / "ddp"
    cfg = _cfg(images, run, devices=2, strategy="ddp_fork", kimg=0.008, snap=0.008, pl_weight=0.0)
    out = run_gan_train(cfg)
    assert out["kimg"] == pytest.approx(0.008)
    snap = load_snapshot(run)
    assert snap["meta"]["cur_nimg"] == 8
    rows = read_metrics(run / "metrics.jsonl")
    assert rows and rows[-1]["kimg"] == pytest.approx(0.008) and "r1_penalty" in rows[0]


def test_metric_encoder_reads_a_pretrain_backbone_by_contract(images: Path, tmp_path: Path) -> None:
    """--metric-encoder takes a `glomssl pretrain` run: a torchvision resnet18 trunk (no fc) saved as
    backbone.safetensors + backbone.json (the shared contract), loaded via load_backbone."""
    torchvision = pytest.importorskip("torchvision")
    from glomssl.datagan.metrics import MetricEncoder
    from glomssl.runs import save_weights

    torch.manual_seed(0)
    trunk = torchvision.models.resnet18(weights=None)
    state = {k: v for k, v in trunk.state_dict().items() if not k.startswith("fc.")}
    meta = {"arch": "resnet18", "method": "simsiam", "image_size": 64, "feature_dim": 512}
    meta.update({"mean": [0.7, 0.5, 0.7], "std": [0.2, 0.2, 0.2], "step": 0})
    save_weights(tmp_path / "pre" / "backbone.safetensors", state, meta)
    enc = MetricEncoder(str(tmp_path / "pre"))
    assert enc.image_size == 64
    feats = enc.dataset_features(make_dataset(_cfg(images, tmp_path / "x")), 5)
    assert feats.shape == (5, 512) and np.isfinite(feats).all()
    with pytest.raises(GlomsslError):
        MetricEncoder(str(tmp_path / "missing-run"))
    # and through the training loop: FID/KID logged with the snapshot
    run = tmp_path / "mrun"
    cfg = _cfg(images, run, kimg=0.004, metric_encoder=str(tmp_path / "pre"), metric_num=8)
    run_gan_train(cfg)
    last = read_metrics(run / "metrics.jsonl")[-1]
    assert np.isfinite(last["fid_enc"]) and np.isfinite(last["kid_enc"])


def test_bf16_mixed_precision_loop_runs(images: Path, tmp_path: Path) -> None:
    """The mixed-precision path (autocast, conv clamping, R1 and path length under autocast) on CPU
    bf16; on GPUs the same code runs with --precision bf16-mixed (the GPU default)."""
    run = tmp_path / "bf16"
    run_gan_train(_cfg(images, run, precision="bf16-mixed", kimg=0.004))
    rows = read_metrics(run / "metrics.jsonl")
    assert np.isfinite(rows[-1]["loss_G"]) and np.isfinite(rows[-1]["r1_penalty"])
    snap = load_snapshot(run)
    assert snap["meta"]["G_kwargs"]["conv_clamp"] == 256.0
    assert "# resolved precision: bf16-mixed" in (run / "config.yaml").read_text()


def test_ddp_rank_check_catches_unsynchronised_gradients(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the gradient all-reduce the two ranks drift apart, and training must say so."""
    import glomssl.datagan.train as train_mod

    monkeypatch.setattr(train_mod, "_flat_all_reduce", lambda *a, **k: None)
    cfg = _cfg(images, tmp_path / "bad", devices=2, strategy="ddp_fork", kimg=0.008, pl_weight=0.0)
    with pytest.raises(Exception, match="diverged"):
        run_gan_train(cfg)


@pytest.mark.slow
def test_cli_ddp_two_cpu_processes_via_subprocess_launcher(images: Path, tmp_path: Path) -> None:
    """`glomssl gan train --devices 2` relaunches itself as two gloo ranks (Lightning's ddp)."""
    from _proc import check, run_cli

    run = tmp_path / "cliddp"
    cmd = [
        "gan",
        "train",
        "--data",
        str(images),
        "--out",
        str(run),
    ]
    cmd += ["--resolution", "32", "--networks", "small", "--channel-max", "8", "--batch-size", "4"]
    cmd += ["--kimg", "0.008", "--snap", "0.008", "--tick", "0.004", "--workers", "0"]
    cmd += ["--accelerator", "cpu", "--devices", "2", "--quiet"]
    proc = check(run_cli(cmd, timeout=600))
    assert not proc.left_behind  # no rank outlives the command
    assert json.loads(proc.stdout.strip().splitlines()[-1])["kimg"] == pytest.approx(0.008)
    assert load_snapshot(run)["meta"]["cur_nimg"] == 8


def test_max_minutes_stops_early_with_a_snapshot(images: Path, tmp_path: Path) -> None:
    # a budget far below one step's time: the loop must stop after its first step and still snapshot
    run = tmp_path / "run"
    out = run_gan_train(_cfg(images, run, kimg=100.0, snap=50.0, tick=50.0, max_minutes=1e-6))
    assert out["kimg"] == pytest.approx(0.004)
    assert load_snapshot(run)["meta"]["cur_nimg"] == 4
    assert [r["kimg"] for r in read_metrics(run / "metrics.jsonl")] == [0.004]
    with pytest.raises(GlomsslError, match="--max-minutes"):
        _cfg(images, tmp_path / "x", max_minutes=0).validate()


def test_resume_does_not_repeat_metrics_logged_after_the_last_snapshot(
    images: Path, tmp_path: Path
) -> None:
    """A run killed after its last snapshot may have logged later ticks; --resume trains them again,
    so those lines are dropped first (issue 10, item 10)."""
    run = tmp_path / "run"
    run_gan_train(_cfg(images, run))
    with open(run / "metrics.jsonl", "a") as fh:  # what the killed run logged after the snapshot
        fh.write(json.dumps({"kimg": 0.012, "loss_G": 1.0}) + "\n")
    run_gan_train(_cfg(images, run, kimg=0.016, resume=True))
    kimgs = [r["kimg"] for r in read_metrics(run / "metrics.jsonl")]
    assert kimgs == [0.004, 0.008, 0.012, 0.016]
    assert read_metrics(run / "metrics.jsonl")[2]["loss_G"] != 1.0


def test_resume_and_generate_fall_back_to_the_newest_complete_snapshot(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Weights without their JSON sidecar (a crash between the two writes) must not block --resume
    or `gan generate` (issue 10, item 11)."""
    import shutil

    from glomssl.datagan.snapshot import resolve_snapshot

    run = tmp_path / "run"
    run_gan_train(_cfg(images, run))
    good = list_snapshots(run)[-1]
    shutil.copy(good, run / "snapshot-000099.safetensors")  # newer, but its sidecar never came
    assert resolve_snapshot(run) == good
    out = run_gan_train(_cfg(images, run, kimg=0.012, resume=True))
    assert out["kimg"] == pytest.approx(0.012)
    assert "skipping incomplete snapshot" in capsys.readouterr().err


def test_auto_config_on_a_cpu_uses_the_small_networks(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "auto"
    run_gan_train(_cfg(images, run, networks="auto", channel_max=None, kimg=0))
    err = capsys.readouterr().err
    assert "uses the 'small' networks" in err and len(err.strip().splitlines()) == 1
    snap = load_snapshot(run)
    assert (
        snap["meta"]["G_kwargs"]["channel_base"] == 2048 and snap["meta"]["G_kwargs"]["z_dim"] == 64
    )
    assert "# resolved cfg: small" in (run / "config.yaml").read_text()
    # resuming keeps the networks the run started with
    run_gan_train(_cfg(images, run, networks="auto", channel_max=None, kimg=0.004, resume=True))
    assert load_snapshot(run)["meta"]["config"]["cfg_resolved"] == "small"


def test_progress_lines_without_a_terminal(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_gan_train(_cfg(images, tmp_path / "run", quiet=False))
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("gan train img")]
    assert len(lines) >= 2 and "kimg=0.008" in lines[-1] and "loss_G=" in lines[-1]


def test_data_that_is_no_manifest_says_what_data_must_be(images: Path, tmp_path: Path) -> None:
    """`gan metrics --data x.csv` said "x.csv:1: not valid JSON"; it now names the file and says
    what --data takes. A real manifest with one broken line is still reported by its line."""
    from glomssl.manifest import image_row

    run = tmp_path / "run"
    run_gan_train(_cfg(images, run, kimg=0))
    table = tmp_path / "labels.csv"
    table.write_text("image,label\np0.png,GS\n")
    args = ["metrics", "--network", str(run), "--data", str(table), "--device", "cpu"]
    r = CliRunner().invoke(gan, [*args, "--metric-encoder", str(tmp_path / "unused")])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    assert f"Error: --data {table} is not a glomssl manifest (JSONL" in r.output
    assert "pass a folder of images, a manifest or whole-slide images" in r.output
    junk = tmp_path / "junk.bin"
    junk.write_bytes(bytes(range(256)) * 8)  # binary, no newline
    with pytest.raises(GlomsslError, match="junk.bin is not a glomssl manifest"):
        make_dataset(_cfg(junk, tmp_path / "o"))
    manifest = images / "m.jsonl"
    row = json.dumps(image_row(images / "p0.png", images))
    manifest.write_text(row + "\nnot json\n")
    with pytest.raises(GlomsslError, match=r"m.jsonl:2: not valid JSON"):
        make_dataset(_cfg(manifest, tmp_path / "o"))
    manifest.write_text(row + "\n")
    assert len(make_dataset(_cfg(manifest, tmp_path / "o"))) == 1
