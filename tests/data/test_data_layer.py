"""The shared data layer: one image loader, masks, paired transforms, group-aware splits, sources."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from glomssl.data.images import centre_square, image_ok, load_rgb, save_png, to_uint8
from glomssl.data.masks import IGNORE, read_mask
from glomssl.data.sources import resolve_sources, write_skipped
from glomssl.data.splits import grouped_holdout, grouped_kfold, stratified_fraction
from glomssl.data.transforms import PairedAugment, centre_resize, paired_augment
from glomssl.errors import GlomsslError


def bomb_png(path: Path, side: int = 30_000) -> Path:
    """A tiny PNG whose header claims side x side pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    raw = zlib.compress(b"\x00" * (side * 3 + 1) * 4)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")
    )
    return path


def test_load_rgb_handles_modes_and_refuses_bombs(tmp_path: Path) -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200  # fully transparent red -> white
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert np.asarray(load_rgb(tmp_path / "a.png")).min() == 255
    Image.fromarray(np.arange(16, dtype=np.uint16).reshape(4, 4) * 4000).save(tmp_path / "b.png")
    b = np.asarray(load_rgb(tmp_path / "b.png"))
    assert b.shape == (4, 4, 3) and b.min() == 0 and b.max() == 255
    bomb = bomb_png(tmp_path / "bomb.png")
    with pytest.raises(GlomsslError, match="bomb.png is not a readable image"):
        load_rgb(bomb)
    assert image_ok(bomb) is not None and image_ok(tmp_path / "a.png") is None


def test_centre_square_and_png_roundtrip(tmp_path: Path) -> None:
    im = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 40, 3), dtype=np.uint8))
    sq = centre_square(im, 10)
    assert sq.size == (10, 10)
    save_png(tmp_path / "x.png", np.asarray(sq))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "x.png")), np.asarray(sq))
    t = torch.tensor([[-1.0, 0.0], [1.0, 2.0]]).expand(3, 2, 2)
    assert to_uint8(t)[..., 0].tolist() == [[0, 128], [255, 255]]


def test_read_mask_binary_ids_and_errors(tmp_path: Path) -> None:
    rgb = np.zeros((6, 6, 3), np.uint8)
    rgb[1:3, 1:3, 0] = 255  # red foreground, as QuPath/painting tools export
    rgb[4, 4] = (100, 100, 100)  # an anti-aliased grey edge below the threshold
    Image.fromarray(rgb).save(tmp_path / "m.png")
    m = read_mask(tmp_path / "m.png", binary=True)
    assert m.sum() == 4 and m.dtype == np.uint8
    with pytest.raises(GlomsslError, match="colour image"):
        read_mask(tmp_path / "m.png", num_classes=2)
    ids = np.zeros((6, 6), np.uint8)
    ids[0, 0], ids[1, 1] = 2, IGNORE
    Image.fromarray(ids).save(tmp_path / "ids.png")
    assert read_mask(tmp_path / "ids.png", num_classes=3)[1, 1] == IGNORE
    with pytest.raises(GlomsslError, match="class id 2, but there are only 2 classes"):
        read_mask(tmp_path / "ids.png", num_classes=2)
    with pytest.raises(GlomsslError, match="is 6x6 but its image is 8x6"):
        read_mask(tmp_path / "ids.png", num_classes=3, size=(8, 6))


def test_paired_augment_applies_one_geometry_to_both() -> None:
    g = torch.Generator().manual_seed(0)
    img = torch.zeros(3, 32, 32)
    img[:, 4:12, 20:28] = 1.0  # a bright square
    mask = torch.zeros(32, 32, dtype=torch.long)
    mask[4:12, 20:28] = 1
    spec = PairedAugment(stain_jitter=0.0, brightness=0.0, contrast=0.0)
    for _ in range(20):
        a, m = paired_augment(img, mask, 16, spec, g)
        assert a.shape == (3, 16, 16) and m.shape == (16, 16)
        assert set(m.unique().tolist()) <= {0, 1, IGNORE}
        inside = m == 1
        if (
            inside.any()
        ):  # the square moved with its mask (edges blur: bilinear image, nearest mask)
            assert float(a[0][inside].mean()) > 0.7
        if (m == 0).any():
            assert float(a[0][m == 0].mean()) < 0.3
    i2, m2 = centre_resize(img, mask, 16)
    assert i2.shape == (3, 16, 16) and m2 is not None and m2.dtype == torch.long


def test_grouped_splits_never_share_a_group() -> None:
    y = np.array(["a", "b"] * 20)
    g = np.repeat(np.arange(10), 4)
    for tr, te in grouped_kfold(y, g, 5, seed=1, repeats=2):
        assert not set(g[tr]) & set(g[te])
    tr, va = grouped_holdout(y, g, 0.25, seed=0)
    assert not set(g[tr]) & set(g[va]) and 0.1 < len(va) / len(y) < 0.45
    with pytest.raises(GlomsslError, match="needs at least 12 groups, but the data has 10"):
        grouped_kfold(y, g, 12)


def test_label_fraction_keeps_every_class() -> None:
    y = np.array(["a"] * 95 + ["b"] * 5)
    idx = stratified_fraction(y, 0.01, seed=0)
    assert set(y[idx]) == {"a", "b"} and len(idx) == 2
    with pytest.raises(GlomsslError, match="class 'b' has 5 example"):
        stratified_fraction(y, 0.01, min_per_class=6)


def test_sources_skip_and_list_unreadable_files(tmp_path: Path) -> None:
    d = tmp_path / "imgs"
    d.mkdir()
    Image.new("RGB", (8, 8), "white").save(d / "ok.png")
    (d / "broken.png").write_bytes(b"not a png")
    bomb_png(d / "bomb.png")
    src = resolve_sources([str(d), str(d)])  # the same folder twice: each file once
    assert [p.name for p in src.paths] == ["ok.png"]
    assert sorted(Path(s["path"]).name for s in src.skipped) == ["bomb.png", "broken.png"]
    out = write_skipped(tmp_path / "run", src.skipped)
    assert out is not None and len(out.read_text().splitlines()) == 2
    assert json.loads(out.read_text().splitlines()[0])["reason"]
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "broken.png").write_bytes(b"not a png")
    with pytest.raises(GlomsslError, match="none of the 1 images"):
        resolve_sources([str(only_bad)])


def test_perturb_stains_identity_and_one_implementation() -> None:
    import torch

    from glomssl.data.transforms import perturb_stains
    from glomssl.ssl.transforms import StainJitter

    img = torch.rand(3, 8, 8) * 0.9 + 0.05
    same = perturb_stains(img, torch.ones(3), torch.zeros(3))
    assert torch.allclose(same, img, atol=1e-5)
    # the SSL view transform draws its own alpha/beta but uses the shared function
    torch.manual_seed(0)
    a = StainJitter(0.2)(img)
    torch.manual_seed(0)
    alpha = 1 + (torch.rand(3) * 2 - 1) * 0.2
    beta = (torch.rand(3) * 2 - 1) * 0.2
    assert torch.allclose(a, perturb_stains(img, alpha, beta, eps=1e-3)) and not torch.allclose(
        a, img
    )


def test_read_table_csv_jsonl_and_one_line_errors(tmp_path: Path) -> None:
    from glomssl.data.tables import read_table

    (tmp_path / "t.csv").write_text("\ufeffpath,mask\na.png,a_mask.png\n", encoding="utf-8")
    assert read_table(tmp_path / "t.csv") == [{"path": "a.png", "mask": "a_mask.png"}]
    (tmp_path / "t.jsonl").write_text('{"path": "a.png"}\n\n{"path": "b.png"}\n')
    assert [r["path"] for r in read_table(tmp_path / "t.jsonl")] == ["a.png", "b.png"]
    (tmp_path / "bad.jsonl").write_text('{"path": "a.png"}\n[1, 2]\n')
    with pytest.raises(GlomsslError, match=r"bad.jsonl:2: expected a JSON object"):
        read_table(tmp_path / "bad.jsonl")
    (tmp_path / "broken.jsonl").write_text("{oops\n")
    with pytest.raises(GlomsslError, match=r"broken.jsonl:1: not valid JSON"):
        read_table(tmp_path / "broken.jsonl")
    with pytest.raises(GlomsslError, match="is not a file"):
        read_table(tmp_path / "missing.csv", "--train")
