"""Partially labelled tables, mask kinds, checks, grouped splits and the per-task batch sampler."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from glomssl.data.transforms import PairedAugment
from glomssl.errors import GlomsslError
from glomssl.finetune.segmenter import data as D
from glomssl.finetune.segmenter.dataset import SegDataset, TaskBatchSampler


def test_tables_csv_jsonl_and_folder(seg_table: Path, tmp_path: Path) -> None:
    rows = D.read_table(seg_table)
    assert len(rows) == 16 and all(img.is_file() and m.is_file() for img, m, _ in rows)
    jl = seg_table.parent / "t.jsonl"
    jl.write_text("".join(json.dumps({**r, "path": str(i.relative_to(seg_table.parent)),
                                      "mask": str(m.relative_to(seg_table.parent))}) + "\n"
                          for i, m, r in rows))  # fmt: skip
    assert [a for a, _, _ in D.read_table(jl)] == [a for a, _, _ in rows]
    items = D.load_items([str(seg_table.parent)], ["glomerulus"])  # images/ + masks/ folder
    assert len(items) == 16 and {it.task for it in items} == {"glomerulus"}
    assert D.tasks_in([str(seg_table)]) == ["Tuft", "GS"]  # GIO2 order for known names
    bad = tmp_path / "bad.csv"
    bad.write_text("path,task\nimages/a.png,Tuft\n")
    with pytest.raises(GlomsslError, match="lacks mask"):
        D.read_table(bad)
    with pytest.raises(GlomsslError, match="images/ and masks/"):
        D.read_table(tmp_path)


def test_task_checks(seg_table: Path) -> None:
    with pytest.raises(GlomsslError, match="'GS'.*not in --classes"):
        D.load_items([str(seg_table)], ["Tuft"])
    items = D.load_items([str(seg_table)], ["Tuft", "GS", "Cap"])
    assert {it.task for it in items} == {"Tuft", "GS"}
    assert items[0].meta["slide"] == "s0" and items[0].meta["species"] == "rodent"
    f = D.parse_filters(["species=rodent", "task=GS,Tuft"], "--train-filter")
    kept = [it for it in items if D.keep_row(it, f)]
    assert kept and all(it.meta["species"] == "rodent" for it in kept)
    with pytest.raises(GlomsslError, match="key=value"):
        D.parse_filters(["species"], "--train-filter")
    # filtering happens before the class check: one class of a two-task table is a valid run
    only = D.load_items([str(seg_table)], ["Tuft"], filters={"task": {"Tuft"}})
    assert len(only) == 8 and {it.task for it in only} == {"Tuft"}
    assert D.tasks_in([str(seg_table)], {"task": {"GS"}}) == ["GS"]


def test_missing_task_with_several_classes_is_an_error(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "m.png")
    (tmp_path / "t.csv").write_text("path,mask\na.png,m.png\n")
    with pytest.raises(GlomsslError, match="has no task"):
        D.load_items([str(tmp_path / "t.csv")], ["Tuft", "GS"])
    assert D.load_items([str(tmp_path / "t.csv")], ["Tuft"])[0].task == "Tuft"


def test_mask_kinds(tmp_path: Path) -> None:
    """0/1(/255) masks are ids (255 kept as not annotated); painted masks are thresholded."""
    ids = np.zeros((6, 6), np.uint8)
    ids[1:3, 1:3] = 1
    ids[5] = 255
    Image.fromarray(ids).save(tmp_path / "ids.png")
    m = D.task_mask(tmp_path / "ids.png")
    assert m[1, 1] == 1 and m[0, 0] == 0 and (m[5] == 255).all()
    painted = np.zeros((6, 6), np.uint8)
    painted[2:4, 2:4] = 255
    painted[0, 0] = 100  # anti-aliased edge below the threshold
    Image.fromarray(painted).save(tmp_path / "p.png")
    p = D.task_mask(tmp_path / "p.png")
    assert set(np.unique(p).tolist()) == {0, 1} and p[2, 2] == 1 and p[0, 0] == 0
    rgb = np.zeros((6, 6, 3), np.uint8)
    rgb[3:, :, 0] = 255  # red = foreground, as in the aidpath masks
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    assert (
        D.task_mask(tmp_path / "rgb.png")[4, 0] == 1
        and D.task_mask(tmp_path / "rgb.png")[0, 0] == 0
    )
    assert D.task_mask(tmp_path / "p.png", threshold=99)[0, 0] == 1


def _pair(folder: Path, name: str, size: tuple[int, int], msize: tuple[int, int]) -> None:
    Image.fromarray(np.zeros((size[1], size[0], 3), np.uint8)).save(folder / f"{name}.png")
    Image.fromarray(np.zeros((msize[1], msize[0]), np.uint8)).save(folder / f"{name}_m.png")


def test_check_items_sizes_ids_and_corrupt_images(tmp_path: Path) -> None:
    _pair(tmp_path, "a", (8, 8), (8, 8))
    _pair(tmp_path, "b", (8, 8), (8, 6))
    (tmp_path / "c.png").write_bytes(b"not a png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "c_m.png")
    mk = lambda n: D.SegItem(tmp_path / f"{n}.png", tmp_path / f"{n}_m.png", "Tuft")  # noqa: E731
    ok, skipped = D.check_items([mk("a"), mk("c")], ["Tuft"], 127)
    assert [it.image.name for it in ok] == ["a.png"] and ok[0].size == (8, 8)
    assert skipped and skipped[0]["path"].endswith("c.png")
    with pytest.raises(GlomsslError, match=r"b_m.png is 8x6 but its image b.png is 8x8"):
        D.check_items([mk("b")], ["Tuft"], 127)
    lab = np.zeros((8, 8), np.uint8)
    lab[0, 0] = 3  # class id 3 with 2 classes (ids 0..2)
    Image.fromarray(lab).save(tmp_path / "a_m.png")
    item = D.SegItem(tmp_path / "a.png", tmp_path / "a_m.png", None)
    with pytest.raises(GlomsslError, match="class id 3"):
        D.check_items([item], ["Tuft", "GS"], 127)


def test_split_groups_never_straddle(seg_table: Path) -> None:
    items = D.load_items([str(seg_table)], ["Tuft", "GS"])
    tr, va, how = D.split_items(items, 0.25, seed=3)
    assert how == "grouped holdout" and tr and va
    assert not {it.meta["slide"] for it in tr} & {it.meta["slide"] for it in va}
    tr2, va2, _ = D.split_items(items, 0.25, seed=3)
    assert [it.image for it in va2] == [it.image for it in va]  # fixed by the seed
    for i, it in enumerate(items):
        it.meta["split"] = "val" if i < 3 else ("test" if i == 3 else "train")
    tr3, va3, how3 = D.split_items(items, 0.25, seed=0)
    assert how3 == "split column" and len(va3) == 3 and len(tr3) == 12


def test_task_batch_sampler() -> None:
    tasks = [0] * 7 + [1] * 5 + [0] * 6  # 12 real (7 of task 0, 5 of task 1), 6 synthetic task 0
    syn = [False] * 12 + [True] * 6
    s = TaskBatchSampler(tasks, syn, batch_size=4, ratio=0.5, seed=1)
    plan = s.plan(0)
    for batch in plan:
        assert len(batch) == 4 and len({tasks[i] for i in batch}) == 1  # one task per batch
        if tasks[batch[0]] == 0:
            assert sum(syn[i] for i in batch) == 2  # half synthetic where a pool exists
        else:
            assert not any(syn[i] for i in batch)
    real_seen = {i for b in plan for i in b if not syn[i]}
    assert real_seen == set(range(12))  # every real item once per epoch (plus padding)
    assert s.plan(0) == plan and s.plan(1) != plan  # fixed per epoch, new each epoch
    r0 = TaskBatchSampler(tasks, syn, 4, 0.5, seed=1, rank=0, world=2)
    r1 = TaskBatchSampler(tasks, syn, 4, 0.5, seed=1, rank=1, world=2)
    b0, b1 = list(r0), list(r1)
    assert len(b0) == len(b1) == len(r0)
    assert b0 != b1 and all(e == 0 for b in b0 for _, e in b)
    r0.sampler.set_epoch(5)  # what Lightning calls
    assert all(e == 5 for b in r0 for _, e in b)
    mixed = TaskBatchSampler(tasks, syn, 4, 0.0, mode="mixed", seed=0).plan(0)
    assert any(len({tasks[i] for i in b}) > 1 for b in mixed)


def test_dataset_views_are_deterministic_and_keep_ids(seg_table: Path) -> None:
    items = D.load_items([str(seg_table)], ["Tuft", "GS"])
    ds = SegDataset(items, ["Tuft", "GS"], 32, PairedAugment(), seed=0)
    a, b, c = ds[(0, 1)], ds[(0, 1)], ds[(0, 2)]
    assert a["image"].shape == (3, 32, 32) and a["mask"].shape == (32, 32)
    assert torch.equal(a["image"], b["image"]) and not torch.equal(a["image"], c["image"])
    assert set(torch.unique(a["mask"]).tolist()) <= {0, 1, 255} and a["task"] == 0
    val = SegDataset(items, ["Tuft", "GS"], 32, None)
    v = val[2]
    assert v["task"] == 1 and v["image"].shape == (3, 32, 32)
    assert torch.equal(val[2]["image"], v["image"])
