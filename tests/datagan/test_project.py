"""W+ projection: MS-SSIM, noise penalty, fitting a generated target, the annotation-folder output."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from glomssl.datagan import project as pj
from glomssl.datagan.factory import to_uint8
from glomssl.datagan.features import load_network, noise_buffers
from glomssl.datagan.labeler import scan_annotations
from glomssl.datagan.networks import create_discriminator, create_generator
from glomssl.datagan.snapshot import save_snapshot
from glomssl.errors import GlomsslError

RES = 32


@pytest.fixture(scope="module")
def G() -> torch.nn.Module:
    torch.manual_seed(0)
    return load_network(create_generator("small", RES))


def test_ms_ssim_properties() -> None:
    x = torch.rand(2, 3, RES, RES) * 2 - 1
    torch.testing.assert_close(pj.ms_ssim(x, x), torch.ones(2), atol=1e-5, rtol=0)
    slightly = (x + 0.05 * torch.randn_like(x)).clamp(-1, 1)
    very = (x + 0.5 * torch.randn_like(x)).clamp(-1, 1)
    s1, s2 = pj.ms_ssim(x, slightly), pj.ms_ssim(x, very)
    assert (s1 < 1).all() and (s2 < s1).all()
    big = torch.rand(1, 3, 256, 256) * 2 - 1  # five scales fit at 256 px
    assert float(pj.ms_ssim(big, big)) == pytest.approx(1.0, abs=1e-5)


def test_noise_regulariser_penalises_correlated_noise() -> None:
    g = torch.Generator().manual_seed(0)
    white = torch.randn(32, 32, generator=g)
    smooth = F.interpolate(torch.randn(1, 1, 4, 4, generator=g), size=(32, 32), mode="bilinear")[
        0, 0
    ]
    smooth = (smooth - smooth.mean()) / smooth.std()
    assert float(pj.noise_regulariser([smooth])) > 20 * float(pj.noise_regulariser([white]))


def test_projection_fits_a_generated_target(G: torch.nn.Module) -> None:
    with torch.no_grad():
        z = torch.from_numpy(np.random.RandomState(3).randn(1, G.z_dim)).float()
        target = G.synthesis(G.mapping(z), noise_mode="const")  # (1, 3, H, W)
    before = {n: b.clone() for n, b in noise_buffers(G).items()}
    ws0, _n0, t0 = pj.project_image(G, target, steps=1, optimize_noise=False)
    ws, noise, terms = pj.project_image(G, target, steps=60, lr=0.05, optimize_noise=True)
    assert ws.shape == (G.num_ws, G.w_dim)
    assert set(noise) == set(before)
    assert terms["mse"] < 0.5 * t0["mse"]  # the fit improves a lot from the mean w
    for n, b in noise_buffers(G).items():  # the generator's own noise maps are restored
        assert torch.equal(b, before[n]) and not b.requires_grad


def test_projection_with_glomssl_encoder(G: torch.nn.Module, tmp_path: Path) -> None:
    from glomssl.models.backbones import ResNetTrunk
    from glomssl.runs import save_weights

    trunk = ResNetTrunk("resnet18")
    meta = {"arch": "resnet18", "mean": [0.5] * 3, "std": [0.25] * 3}
    save_weights(tmp_path / "backbone.safetensors", trunk.trunk_state_dict(), meta)
    from glomssl.ssl.embed import load_backbone

    enc, _ = load_backbone(tmp_path, layers=(2, 3, 4))
    target = torch.rand(1, 3, RES, RES) * 2 - 1
    _ws, _noise, terms = pj.project_image(G, target, steps=2, encoder=enc, optimize_noise=False)
    assert 0.0 < terms["encoder"] <= 2.0


def test_run_project_writes_annotation_folder(G: torch.nn.Module, tmp_path: Path) -> None:
    run = tmp_path / "run"
    save_snapshot(
        run / "snapshot-000000.safetensors",
        G,
        create_discriminator("small", RES),
        copy.deepcopy(G),
        0.0,
        0,
    )
    imgs, masks = tmp_path / "real", tmp_path / "real_masks"
    imgs.mkdir()
    masks.mkdir()
    with torch.no_grad():
        fake = G(torch.randn(2, G.z_dim))
    for i in range(2):  # non-square "real" images at another size: centre-cropped and resized
        arr = np.asarray(Image.fromarray(to_uint8(fake[i])).resize((48, 40)))
        Image.fromarray(arr).save(imgs / f"glom{i}.png")
        m = np.zeros((40, 48), np.uint8)
        m[10:30, 14:34] = 1 + i
        Image.fromarray(m).save(masks / f"glom{i}_mask.png")
    cfg = pj.ProjectConfig(
        network=str(run),
        images=str(imgs),
        masks=str(masks),
        out=str(tmp_path / "ann"),
        steps=5,
        quiet=True,
    )
    res = pj.run_datagan_project(cfg)
    assert res["projected"] == 2 and res["skipped"] == 0
    ann = tmp_path / "ann"
    for i in range(2):
        assert Image.open(ann / f"glom{i}.png").size == (RES, RES)
        assert Image.open(ann / "reconstructions" / f"glom{i}.png").size == (RES, RES)
        mask = np.asarray(Image.open(ann / f"glom{i}_mask.png"))
        assert mask.shape == (RES, RES) and set(np.unique(mask)) == {0, 1 + i}
    items = scan_annotations(ann, 3, RES, G)  # ready for train-labeler, noise maps included
    assert [it.name for it in items] == ["glom0", "glom1"] and items[0].latent["noise"]
    assert len((ann / "projection.jsonl").read_text().splitlines()) == 2
    assert (
        json.loads((ann / "projection.jsonl").read_text().splitlines()[0])["image"] == "glom0.png"
    )
    again = pj.run_datagan_project(cfg)  # resumable: already projected images are skipped
    assert again["projected"] == 0 and again["skipped"] == 2

    (masks / "glom1_mask.png").unlink()
    cfg.out = str(tmp_path / "ann2")
    with pytest.raises(GlomsslError, match="image glom1.png has no mask"):
        pj.run_datagan_project(cfg)


def test_painting_tool_masks_are_thresholded_and_validated(tmp_path: Path) -> None:
    """0-255 black/white exports (grey or RGB, anti-aliased, or coloured strokes on black) become
    0/1 at --mask-threshold; class-id masks stay; anything else is a one-line error (issue 10,
    item 17)."""
    yy, xx = np.mgrid[:40, :40]
    disk = np.hypot(yy - 20, xx - 20)
    grey = np.clip((14 - disk) * 128 + 128, 0, 255).astype(np.uint8)  # soft (anti-aliased) edge
    Image.fromarray(grey).save(tmp_path / "grey.png")
    Image.fromarray(np.stack([grey] * 3, -1)).save(tmp_path / "rgb.png")
    red = np.zeros((40, 40, 3), np.uint8)
    red[..., 0] = grey
    Image.fromarray(red).save(tmp_path / "red.png")
    want = (grey > 127).astype(np.uint8)
    for name in ("grey.png", "rgb.png", "red.png"):
        got = pj.mask_class_ids(tmp_path / name)
        assert np.array_equal(got, want), name
    assert pj.mask_class_ids(tmp_path / "grey.png", threshold=250).sum() < want.sum()
    ids = np.zeros((40, 40), np.uint8)
    ids[5:15] = 2
    ids[30:] = 255  # unlabelled
    Image.fromarray(ids).save(tmp_path / "ids.png")
    assert np.array_equal(pj.mask_class_ids(tmp_path / "ids.png"), ids)
    photo = np.random.default_rng(0).integers(0, 256, (40, 40), dtype=np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    with pytest.raises(GlomsslError, match="neither class ids"):
        pj.mask_class_ids(tmp_path / "photo.png")


def test_project_reads_exported_masks_and_skips_unreadable_images(
    G: torch.nn.Module, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from click.testing import CliRunner

    from glomssl.cli.datagan import datagan

    run = tmp_path / "run"
    save_snapshot(
        run / "snapshot-000000.safetensors",
        G,
        create_discriminator("small", RES),
        copy.deepcopy(G),
        0.0,
        0,
    )
    imgs, masks = tmp_path / "real", tmp_path / "masks"
    imgs.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(imgs / "a.png")
    bw = np.zeros((32, 32, 3), np.uint8)
    bw[8:24, 8:24] = 255
    bw[8, 8:24] = 254  # an anti-aliased edge, the case that used to fail ("class id 254")
    Image.fromarray(bw).save(masks / "a_mask.png")
    (imgs / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # unreadable: skipped, listed
    Image.fromarray(bw).save(masks / "b_mask.png")
    out = tmp_path / "ann"
    args = ["project", "--network", str(run), "--images", str(imgs), "--masks", str(masks)]
    r = CliRunner().invoke(datagan, [*args, "--out", str(out), "--steps", "2", "--quiet"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["projected"] == 1 and summary["unreadable"] == 1
    mask = np.asarray(Image.open(out / "a_mask.png"))
    assert set(np.unique(mask)) == {0, 1} and mask.sum() == 16 * 16
    skipped = [json.loads(x) for x in (out / "skipped.jsonl").read_text().splitlines()]
    assert [Path(s["path"]).name for s in skipped] == ["b.png"]
    photo = rng.integers(0, 255, (32, 32), dtype=np.uint8)
    Image.fromarray(photo).save(masks / "a_mask.png")
    r = CliRunner().invoke(datagan, [*args, "--out", str(tmp_path / "ann2"), "--steps", "2"])
    assert r.exit_code == 2 and "neither class ids" in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_a_bad_mask_is_named_not_its_image(G: torch.nn.Module, tmp_path: Path) -> None:
    """A mask that is not an image made `project` report the *images* as unreadable ("--images X
    holds no readable image"), and a mask of another size than its image was accepted (and stretched
    by the centre crop). Both are one-line errors naming the mask (and both sizes), exit 2."""
    from click.testing import CliRunner

    from glomssl.cli.datagan import datagan

    run = tmp_path / "run"
    save_snapshot(run / "snapshot-000000.safetensors", G, create_discriminator("small", RES),
                  copy.deepcopy(G), 0.0, 0)  # fmt: skip
    imgs, masks = tmp_path / "real", tmp_path / "masks"
    imgs.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(2)
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(imgs / "a.png")
    (masks / "a_mask.png").write_bytes(rng.bytes(300))  # binary junk, not an image
    args = ["project", "--network", str(run), "--images", str(imgs), "--masks", str(masks)]
    r = CliRunner().invoke(datagan, [*args, "--out", str(tmp_path / "o1"), "--steps", "2"])
    assert r.exit_code == 2
    err = r.output.strip().splitlines()[-1]
    assert (
        err.startswith(f"Error: mask {masks / 'a_mask.png'} cannot be read") and "8-bit PNG" in err
    )
    assert "--images" not in err and "skipped a.png" in err
    # one line, and nothing could be projected: no --out folder is left behind
    assert len(r.output.strip().splitlines()) == 1 and not (tmp_path / "o1").exists()
    bw = np.zeros((48, 40), np.uint8)  # 40 x 48 px: the image's height and width swapped
    bw[10:30, 10:30] = 255
    Image.fromarray(bw).save(masks / "a_mask.png")
    r = CliRunner().invoke(datagan, [*args, "--out", str(tmp_path / "o2"), "--steps", "2"])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1
    assert (
        f"mask {masks / 'a_mask.png'} is 40x48 px but its image {imgs / 'a.png'} is 48x40 px"
        in (r.output)
    )
    assert not (tmp_path / "o2").exists()  # refused before anything is written
    Image.fromarray(bw.T.copy()).save(masks / "a_mask.png")  # the right size: projected
    r = CliRunner().invoke(datagan, [*args, "--out", str(tmp_path / "o3"), "--steps", "2"])
    assert r.exit_code == 0, r.output
    assert np.asarray(Image.open(tmp_path / "o3" / "a_mask.png")).max() == 1
