"""Mosaics from crops: exact boxes from masks, physical scale, slide-grouped splits, resumable builds."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from glomssl.detect.build import DetectDataConfig, run_data
from glomssl.detect.dataset import check_dataset, read_labels, read_pairs, ultralytics_data_file
from glomssl.detect.mosaic import MosaicMaker, load_crops
from glomssl.errors import GlomsslError


def _crops(folder: Path, n: int = 12, slides: int = 4, size: int = 160) -> Path:
    """Crops like ../shared/data/glomeruli: a blue disc (the glomerulus) filling the crop, masks, and
    reddish textured corners (its surroundings)."""
    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    rows = []
    yy, xx = np.mgrid[:size, :size]
    disc = (xx - size / 2 + 0.5) ** 2 + (yy - size / 2 + 0.5) ** 2 <= (0.44 * size) ** 2
    for i in range(n):
        img = np.zeros((size, size, 3), np.uint8)
        img[..., 0] = rng.integers(200, 240, (size, size))
        img[..., 1] = rng.integers(120, 160, (size, size))
        img[..., 2] = rng.integers(140, 180, (size, size))
        img[disc] = (30, 40, 200)
        Image.fromarray(img).save(folder / "images" / f"c{i}.png")
        Image.fromarray((disc * 255).astype(np.uint8)).save(folder / "masks" / f"c{i}.png")
        rows.append(
            {"image": f"images/c{i}.png", "mask": f"masks/c{i}.png", "slide": f"s{i % slides}"}
        )
    with (folder / "labels.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["image", "mask", "slide"])
        w.writeheader()
        w.writerows(rows)
    return folder / "labels.csv"


def _blue_boxes(img: np.ndarray) -> np.ndarray:
    blue = (img[..., 2].astype(int) - img[..., 0].astype(int)) > 60
    n, _, st, _ = cv2.connectedComponentsWithStats(blue.astype(np.uint8))
    return np.array([(s[0], s[1], s[0] + s[2], s[1] + s[3]) for s in st[1:n] if s[4] > 20], float)


def test_mosaic_boxes_are_exact_and_at_the_physical_scale(tmp_path: Path) -> None:
    crops, skipped = load_crops(read_pairs(_crops(tmp_path)))
    assert len(crops) == 12 and not skipped
    assert all(c.corners for c in crops)  # the surroundings outside the disc were found
    by_group: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(crops):
        by_group[c.group].append(i)
    maker = MosaicMaker(
        crops,
        dict(by_group),
        size=256,
        mpp=2.0,
        glom_um=(100, 160),
        glass=0.5,
        negatives=(0, 0),
        poisson=0.0,
    )
    n_boxes = 0
    for k in range(8):
        img, boxes = maker.make(np.random.default_rng(k))
        assert img.shape == (256, 256, 3) and img.dtype == np.uint8
        found = _blue_boxes(img)
        assert len(found) == len(boxes), (k, found, boxes)
        for b in boxes:  # every label box is where a pasted glomerulus is, to a pixel or two
            err = np.abs(found - b).max(axis=1).min()
            assert err <= 2.5, (k, b, found)
            whole = b[0] > 0 and b[1] > 0 and b[2] < 256 and b[3] < 256
            if whole:  # 100-160 um at 2 um/px: 50-80 px (rotation keeps a disc's size)
                assert 48 <= max(b[2] - b[0], b[3] - b[1]) <= 82
        n_boxes += len(boxes)
    assert n_boxes > 5


def test_poisson_pastes_leave_no_colour_step_and_distractors_no_label(tmp_path: Path) -> None:
    """A flat blue paste on a flat pink canvas: alpha blending leaves it blue (a step at its rim);
    Poisson blending keeps its (zero) gradients and takes the canvas colour, so no step is left."""
    crops, _ = load_crops(read_pairs(_crops(tmp_path)))
    by_group: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(crops):
        by_group[c.group].append(i)
    pink = np.array([210, 130, 180], np.float32)
    blue = np.full((60, 60, 3), (30, 40, 200), np.float32)
    yy, xx = np.mgrid[:60, :60]
    alpha = (((xx - 30) ** 2 + (yy - 30) ** 2) <= 22**2).astype(np.float32)
    out = {}
    for p in (0.0, 1.0):
        maker = MosaicMaker(crops, dict(by_group), size=128, poisson=p, textures=1)
        canvas = np.tile(pink, (128, 128, 1))
        maker._blend(np.random.default_rng(0), canvas, blue, alpha, 30, 40)
        out[p] = canvas
    assert np.abs(out[0.0][70, 60] - blue[0, 0]).max() < 1  # alpha: the paste is blue
    assert np.abs(out[1.0] - pink).max() < 3  # Poisson: nothing shows
    maker = MosaicMaker(crops, dict(by_group), size=128, per_tile=(0, 0), negatives=(3, 3))
    for k in range(3):  # distractors are never labelled
        img, boxes = maker.make(np.random.default_rng(k))
        assert len(boxes) == 0 and img.std() > 5


def test_data_set_split_by_slide_resume_and_refusals(tmp_path: Path) -> None:
    manifest = _crops(tmp_path / "crops")
    cfg = DetectDataConfig(
        out=str(tmp_path / "ds"),
        crops=str(manifest),
        n=12,
        size=128,
        val_fraction=0.25,
        per_tile=[1, 3],
        quiet=True,
    )
    s = run_data(cfg)
    assert s["mosaics"] == {"train": 9, "val": 3}
    val_slides = set(s["val_groups"])
    assert val_slides and val_slides < {"s0", "s1", "s2", "s3"}
    info = check_dataset(tmp_path / "ds")
    assert info["counts"] == {"train": 9, "val": 3} and info["mpp"] == 2.0
    labels = sorted((tmp_path / "ds" / "labels" / "train").glob("*.txt"))
    rows = np.concatenate([read_labels(p) for p in labels])
    assert (
        len(rows) >= 9
        and (rows[:, 0] == 0).all()
        and ((rows[:, 1:] >= 0) & (rows[:, 1:] <= 1)).all()
    )
    # a crash mid-build: the same command rebuilds exactly the missing tile
    img = tmp_path / "ds" / "images" / "train" / "mosaic000004.jpg"
    before = img.read_bytes()
    img.unlink()
    run_data(cfg)
    assert img.read_bytes() == before
    # other options into the same folder, or an unrelated non-empty folder: refused
    with pytest.raises(GlomsslError, match="other options"):
        run_data(DetectDataConfig(**{**cfg.__dict__, "seed": 3}))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x.txt").write_text("x")
    with pytest.raises(GlomsslError, match="not empty"):
        run_data(DetectDataConfig(**{**cfg.__dict__, "out": str(tmp_path / "busy")}))
    # the ultralytics data file is written by glomssl, with paths and the class name only
    run = tmp_path / "run"
    run.mkdir()
    text = ultralytics_data_file(tmp_path / "ds", run).read_text()
    assert "download" not in text and "glomerulus" in text


def test_data_set_checks(tmp_path: Path) -> None:
    with pytest.raises(GlomsslError, match="not a glomssl detector data set"):
        check_dataset(tmp_path)
    (tmp_path / "dataset.json").write_text(json.dumps({"format": "glomssl-detect-dataset/1"}))
    with pytest.raises(GlomsslError, match="unfinished"):
        check_dataset(tmp_path)
    bad = tmp_path / "l.txt"
    bad.write_text("0 0.5 0.5 2.0 0.1\n")
    with pytest.raises(GlomsslError, match="line 1"):
        read_labels(bad)
    one = tmp_path / "one.csv"
    one.write_text("image,mask,slide\na.png,b.png,s0\n")
    with pytest.raises(GlomsslError, match="at least two"):
        run_data(DetectDataConfig(out=str(tmp_path / "o"), crops=str(one), quiet=True))
    nomask = tmp_path / "nomask.csv"
    nomask.write_text("image,slide\na.png,s0\n")
    with pytest.raises(GlomsslError, match="mask"):
        read_pairs(nomask)


def test_fields_become_labelled_tiles(tmp_path: Path) -> None:
    """A large annotated field at 0.5 um/px -> tiles at 2 um/px with one box per glomerulus."""
    img = np.full((800, 800, 3), 220, np.uint8)
    mask = np.zeros((800, 800), np.uint8)
    cv2.circle(mask, (200, 200), 100, 255, -1)
    cv2.circle(mask, (600, 500), 120, 255, -1)
    img[mask > 0] = (40, 40, 200)
    for name in ("f0", "f1"):
        Image.fromarray(img).save(tmp_path / f"{name}.png")
        Image.fromarray(mask).save(tmp_path / f"{name}_m.png")
    (tmp_path / "fields.csv").write_text("image,mask,slide\nf0.png,f0_m.png,a\nf1.png,f1_m.png,b\n")
    cfg = DetectDataConfig(
        out=str(tmp_path / "ds"),
        fields=str(tmp_path / "fields.csv"),
        fields_mpp=0.5,
        size=192,
        quiet=True,
    )
    s = run_data(cfg)
    # 800 px at 0.5 um/px = 200 px at 2 um/px: 4 tiles of 192 per field, one field per side
    assert s["field_tiles"] == {"train": 4, "val": 4}
    for lab in (tmp_path / "ds" / "labels" / "train").glob("*.txt"):
        rows = read_labels(lab)
        sizes = sorted((rows[:, 3] * 192).tolist())  # discs of 100 and 120 px radius at 0.5 um/px
        assert len(sizes) == 2 and abs(sizes[0] - 50) <= 2 and abs(sizes[1] - 60) <= 2
    with pytest.raises(GlomsslError, match="--fields-mpp"):
        DetectDataConfig(out="x", fields="f.csv").validate()


def test_broken_training_sets_are_one_line_errors(tmp_path: Path) -> None:
    """`detect data --fields` whose rows are all unreadable exited 0 with an empty "complete" set; a
    binary label file was a UnicodeDecodeError, a dataset.json without `mpp` a KeyError after training."""
    (tmp_path / "f.csv").write_text("image,mask,slide\nnope.png,nope_m.png,a\nbad.png,m.png,b\n")
    (tmp_path / "bad.png").write_bytes(b"\x00\x01 not an image")
    cfg = DetectDataConfig(
        out=str(tmp_path / "ds"), fields=str(tmp_path / "f.csv"), fields_mpp=0.5, quiet=True
    )
    with pytest.raises(GlomsslError, match=r"--fields .*none of its 2 fields is usable"):
        run_data(cfg)
    binary = tmp_path / "b.txt"
    binary.write_bytes(b"\xf0\x9f\x00\xff garbage")
    with pytest.raises(GlomsslError, match="not a readable text file"):
        read_labels(binary)
    d = tmp_path / "set"
    d.mkdir()
    (d / "dataset.json").write_text(
        json.dumps({"format": "glomssl-detect-dataset/1", "complete": True, "mpp": "abc"})
    )
    with pytest.raises(GlomsslError, match="no working resolution"):
        check_dataset(d)


def test_a_wrong_manifest_does_not_block_the_corrected_rerun(tmp_path: Path) -> None:
    """A typo in --crops (or a manifest with no usable crop) wrote the options into --out first, so
    the corrected command was refused ("holds a training set built with other options")."""
    good = _crops(tmp_path / "crops", n=8, slides=4)
    out = str(tmp_path / "ds")
    with pytest.raises(GlomsslError, match="is not a file"):
        run_data(DetectDataConfig(out=out, crops=str(tmp_path / "typo.csv"), n=4, quiet=True))
    assert not Path(out).exists()  # not even an empty folder
    black = tmp_path / "crops" / "black.png"
    Image.fromarray(np.zeros((160, 160), np.uint8)).save(black)
    rows = list(csv.DictReader(good.open()))
    unusable = tmp_path / "crops" / "unusable.csv"
    unusable.write_text(
        "image,mask,slide\n" + "".join(f"{r['image']},black.png,{r['slide']}\n" for r in rows)
    )
    with pytest.raises(GlomsslError, match=r"no readable crop .*\(first: empty mask\)"):
        run_data(DetectDataConfig(out=out, crops=str(unusable), n=4, quiet=True))
    s = run_data(DetectDataConfig(out=out, crops=str(good), n=4, quiet=True))
    assert sum(s["mosaics"].values()) == 4
