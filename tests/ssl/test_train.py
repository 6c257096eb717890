"""run_pretrain end to end on tiny real PNGs: run folder layout, metrics, checkpoints, resume, export."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torchvision
import yaml

from glomssl.config import build_config
from glomssl.errors import GlomsslError
from glomssl.runs import load_weights, read_metrics
from glomssl.ssl.train import PretrainConfig, run_pretrain


def tiny_cfg(data: Path, out: Path, **kw) -> PretrainConfig:
    """The harness with SimSiam and no warm-up (the defaults' VICReg recipe is tested below)."""
    base = dict(
        method="simsiam",
        warmup_steps=0,
        data=[str(data)],
        out=str(out),
        image_size=32,
        batch_size=4,
        max_steps=2,
        workers=0,
        hardware={"accelerator": "cpu"},
        quiet=True,
        log_every=1,
        ckpt_every=1,
        proj_dim=32,
    )
    base.update(kw)
    if base["method"] == "simsiam":
        base.setdefault("pred_hidden", 8)
    return build_config(PretrainConfig, overrides=base)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, make_imgs) -> tuple[Path, Path, dict]:
    root = tmp_path_factory.mktemp("pre")
    make_imgs(root / "imgs", n=8)
    (root / "imgs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    res = run_pretrain(tiny_cfg(root / "imgs", root / "run"))
    return root / "imgs", root / "run", res


def test_run_folder_layout(trained) -> None:
    _, run, res = trained
    for name in ("config.yaml", "metrics.jsonl", "backbone.safetensors", "backbone.json"):
        assert (run / name).is_file(), name
    assert (run / "checkpoints" / "last.ckpt").is_file()
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["method"] == "simsiam" and cfg["image_size"] == 32 and cfg["warmup_steps"] == 0
    assert res["steps"] == 2 and res["skipped"] == 1
    skipped = [json.loads(x) for x in (run / "skipped.jsonl").read_text().splitlines()]
    assert [Path(s["path"]).name for s in skipped] == ["broken.png"]


def test_metrics_have_required_fields(trained) -> None:
    rows = read_metrics(trained[1] / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        for key in ("step", "epoch", "loss", "lr", "emb_std", "effective_batch"):
            assert r[key] is not None, key
        assert 0 < r["emb_std"] <= 1 and r["effective_batch"] == 4
    # cosine schedule: lr decays, scaled by batch/256 (0.05 * 4 / 256 at the start)
    assert rows[1]["lr"] < rows[0]["lr"] <= 0.05 * 4 / 256 + 1e-12


def test_backbone_is_a_torchvision_trunk(trained) -> None:
    tensors, meta = load_weights(trained[1] / "backbone.safetensors")
    assert meta["arch"] == "resnet18" and meta["method"] == "simsiam" and meta["step"] == 2
    assert meta["feature_dim"] == 512 and len(meta["mean"]) == 3 and meta["image_size"] == 32
    net = torchvision.models.resnet18(weights=None)
    missing, unexpected = net.load_state_dict(tensors, strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and not unexpected
    assert "layer1.0.bn1.running_mean" in tensors


def test_resume_continues_to_new_max_steps(trained, tmp_path: Path) -> None:
    data, run, _ = trained
    import shutil

    run2 = tmp_path / "run"
    shutil.copytree(run, run2)
    before, _ = load_weights(run2 / "backbone.safetensors")
    res = run_pretrain(tiny_cfg(data, run2, max_steps=4, resume=True))
    assert res["steps"] == 4
    steps = [r["step"] for r in read_metrics(run2 / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4]  # continued, not restarted
    after, meta = load_weights(run2 / "backbone.safetensors")
    assert meta["step"] == 4
    assert not torch.equal(before["conv1.weight"], after["conv1.weight"])


def test_max_steps_zero_exports_random_init(tmp_path: Path, image_folder: Path) -> None:
    a = run_pretrain(tiny_cfg(image_folder, tmp_path / "a", max_steps=0, seed=3))
    b = run_pretrain(tiny_cfg(image_folder, tmp_path / "b", max_steps=0, seed=3))
    ta, ma = load_weights(a["backbone"])
    tb, _ = load_weights(b["backbone"])
    assert ma["step"] == 0 and not (tmp_path / "a" / "metrics.jsonl").exists()
    assert all(torch.equal(ta[k], tb[k]) for k in ta)  # same seed, same baseline


def test_regcon_saves_encoder_and_decoder(tmp_path: Path, image_folder: Path) -> None:
    res = run_pretrain(
        tiny_cfg(
            image_folder, tmp_path / "r", method="regcon", max_steps=1, image_size=64, regions=3
        )
    )
    assert res["steps"] == 1
    dec, meta = load_weights(tmp_path / "r" / "decoder.safetensors")
    assert meta["part"] == "decoder" and any(k.startswith("blocks.0") for k in dec)
    row = read_metrics(tmp_path / "r" / "metrics.jsonl")[-1]
    assert {"grey_loss", "semantic_loss", "balance_loss"} <= set(row)


def test_bad_values_are_user_errors(tmp_path: Path, image_folder: Path) -> None:
    with pytest.raises(GlomsslError, match="--arch"):
        tiny_cfg(image_folder, tmp_path / "x", arch="vgg")
    with pytest.raises(GlomsslError, match="fewer than one batch"):
        run_pretrain(tiny_cfg(image_folder, tmp_path / "y", batch_size=64))
    with pytest.raises(GlomsslError, match="--warmup-steps"):
        tiny_cfg(image_folder, tmp_path / "z", warmup_steps=-1)


def test_defaults_are_the_measured_recipe() -> None:
    cfg = PretrainConfig(out="x")
    assert (cfg.method, cfg.image_size, cfg.batch_size) == ("vicreg", 64, 256)
    assert (cfg.lr, cfg.warmup_steps, cfg.augment.stain_jitter) == (0.05, 40, 0.05)
    assert cfg.scaled_lr == pytest.approx(0.05)


def test_warmup_then_cosine_decay(tmp_path: Path, image_folder: Path) -> None:
    run_pretrain(
        tiny_cfg(image_folder, tmp_path / "w", method="vicreg", warmup_steps=3, max_steps=6)
    )
    lrs = [r["lr"] for r in read_metrics(tmp_path / "w" / "metrics.jsonl")]
    peak = 0.05 * 4 / 256
    # after k steps: linear warm-up (k+1)/3 for k < 3, then the run's cosine 0.5 (1 + cos(pi k / 6))
    want = [2 / 3, 1.0, 0.5, 0.25, 0.5 * (1 + math.cos(5 * math.pi / 6)), 0.0]
    assert lrs == pytest.approx([peak * w for w in want], abs=1e-12)


def test_divergence_stops_with_a_clear_error_and_exports_nothing(
    tmp_path: Path, image_folder: Path
) -> None:
    cfg = tiny_cfg(image_folder, tmp_path / "d", method="vicreg", lr=100.0, max_steps=6)
    with pytest.raises(GlomsslError, match=r"\(vicreg\) diverged: the loss became (nan|inf).*--lr"):
        run_pretrain(cfg)
    assert not (tmp_path / "d" / "backbone.safetensors").exists()


@pytest.mark.parametrize(
    ("lr", "message"), [("nan", "not a finite"), ("inf", "not a finite"), ("1e30", "<= 100")]
)
def test_non_finite_or_absurd_lr_is_refused_before_work(
    tmp_path: Path, image_folder: Path, lr: str, message: str
) -> None:
    with pytest.raises(GlomsslError, match=f"--lr .*{message}|--lr must be {message}"):
        tiny_cfg(image_folder, tmp_path / "lr", lr=float(lr))
    assert not (tmp_path / "lr").exists()


def test_the_last_step_is_always_logged(tmp_path: Path, image_folder: Path) -> None:
    run_pretrain(tiny_cfg(image_folder, tmp_path / "short", max_steps=3, log_every=100))
    assert [r["step"] for r in read_metrics(tmp_path / "short" / "metrics.jsonl")] == [3]


def test_resume_drops_metrics_written_after_the_last_checkpoint(trained, tmp_path: Path) -> None:
    """A run killed after its checkpoint logged steps that --resume trains again: no duplicates."""
    import shutil

    data, run, _ = trained
    run2 = tmp_path / "killed"
    shutil.copytree(run, run2)
    with open(run2 / "metrics.jsonl", "a") as fh:  # steps 3 and 4 ran, then kill -9 (no checkpoint)
        fh.write('{"step": 3, "loss": 1.0}\n{"step": 4, "loss": 1.0}\n{"step": 5, "lo')
    run_pretrain(tiny_cfg(data, run2, max_steps=4, resume=True))
    assert [r["step"] for r in read_metrics(run2 / "metrics.jsonl")] == [1, 2, 3, 4]


def test_options_of_other_methods_are_refused(tmp_path: Path, image_folder: Path) -> None:
    with pytest.raises(GlomsslError, match="--regions is a regcon option"):
        tiny_cfg(image_folder, tmp_path / "v", method="vicreg", regions=4)
    with pytest.raises(GlomsslError, match="pred_hidden is a simsiam option"):
        tiny_cfg(image_folder, tmp_path / "v", method="vicreg", pred_hidden=4)
    cfg = tiny_cfg(image_folder, tmp_path / "b", method="byol", proj_dim=None)
    assert cfg.method_kwargs() == {"proj_dim": 256}  # BYOL's own width, not the global 2048


def test_validate_does_not_change_the_config(tmp_path: Path, image_folder: Path) -> None:
    cfg = tiny_cfg(image_folder, tmp_path / "v", image_size=48)
    before = repr(cfg)
    cfg.validate()
    assert repr(cfg) == before and cfg.augment.image_size == 224
    assert cfg.augment_spec().image_size == 48


def test_warmup_longer_than_the_run_warns(tmp_path: Path, image_folder: Path, capsys) -> None:
    run_pretrain(tiny_cfg(image_folder, tmp_path / "warm", warmup_steps=40, max_steps=2))
    assert "--warmup-steps 40 is longer than the run (2 steps)" in capsys.readouterr().err


def test_online_knn_probe_is_logged(tmp_path: Path, make_imgs) -> None:
    imgs = make_imgs(tmp_path / "images", n=12)
    lines = ["image,label,slide"] + [
        f"images/{p.name},{'a' if i % 2 == 0 else 'b'},s{i % 4}" for i, p in enumerate(imgs)
    ]
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "cut.png").write_bytes(imgs[0].read_bytes()[:40])  # opens, never decodes
    lines.append("extra/cut.png,a,s0")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    cfg = tiny_cfg(
        tmp_path / "images",
        tmp_path / "run",
        probe_data=str(tmp_path / "labels.csv"),
        probe_every=2,
        log_every=100,
    )
    run_pretrain(cfg)
    rows = [
        r
        for r in read_metrics(tmp_path / "run" / "metrics.jsonl")
        if "probe_knn_balanced_accuracy" in r
    ]
    assert [r["step"] for r in rows] == [2]
    assert 0 <= rows[0]["probe_knn_balanced_accuracy"] <= 1
    assert rows[0]["probe_images_unreadable"] == 1  # left out of the probe, not scored as zeros


@pytest.mark.parametrize("mode", ["train", "frozen"])
def test_backbone_bn_mode_decides_whether_bn_statistics_move(
    tmp_path: Path, image_folder: Path, mode: str
) -> None:
    run_pretrain(tiny_cfg(image_folder, tmp_path / mode, backbone_bn=mode))
    t, meta = load_weights(tmp_path / mode / "backbone.safetensors")
    init, _ = load_weights(
        run_pretrain(tiny_cfg(image_folder, tmp_path / f"{mode}0", max_steps=0))["backbone"]
    )
    means = [k for k in t if k.endswith("running_mean")]
    stats_moved = any(not torch.equal(t[k], init[k]) for k in means)
    weights_moved = not torch.equal(t["conv1.weight"], init["conv1.weight"])
    assert weights_moved  # both modes train the convolutions
    assert stats_moved == (mode == "train")  # frozen: BN statistics stay at mean 0, variance 1
    if mode == "frozen":
        assert all(float(t[k].abs().max()) == 0.0 for k in means)
        assert not torch.equal(t["bn1.weight"], init["bn1.weight"])  # affine weights still learn
    with pytest.raises(GlomsslError, match="backbone.bn"):
        tiny_cfg(image_folder, tmp_path / "x", backbone_bn="half")


def test_progress_lines_without_a_terminal(tmp_path: Path, image_folder: Path, capsys) -> None:
    """In a log file (no terminal) training prints plain progress lines, not a progress bar."""
    run_pretrain(tiny_cfg(image_folder, tmp_path / "log", quiet=False, max_steps=2))
    err = capsys.readouterr().err
    assert "train step 1/2 (50%)" in err and "train step 2/2 (100%)" in err
    assert "\r" not in err


def test_a_corrupt_checkpoint_is_a_one_line_error(trained, tmp_path: Path) -> None:
    import shutil

    data, run, _ = trained
    run2 = tmp_path / "corrupt"
    shutil.copytree(run, run2)
    (run2 / "checkpoints" / "last.ckpt").write_bytes(b"PK\x03\x04 not a checkpoint")
    with pytest.raises(GlomsslError, match="last.ckpt cannot be read safely"):
        run_pretrain(tiny_cfg(data, run2, max_steps=4, resume=True))


def test_images_that_open_but_never_decode_stop_the_run(
    tmp_path: Path, make_imgs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A truncated JPEG passes the header check; with too few good images no batch was ever a step,
    so the run looped forever at 100% CPU. It now stops with a one-line error."""
    import io

    import numpy as np
    from PIL import Image

    from glomssl.ssl import module

    monkeypatch.setattr(module, "MAX_EMPTY_BATCHES", 3)
    make_imgs(tmp_path / "imgs", n=1)
    buf = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buf, "JPEG", quality=95)
    (tmp_path / "imgs" / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    cfg = tiny_cfg(tmp_path / "imgs", tmp_path / "run", batch_size=2, max_steps=1)
    with pytest.raises(GlomsslError, match=r"3 batches in a row .* --data$"):
        run_pretrain(cfg)
    assert not (tmp_path / "run" / "backbone.safetensors").exists()
