"""Numbers the mining commands report agree with what they wrote and did: preview labels with the
manifest's scores, ``mine``'s request count with the server's log, float summary values with the
stage's own, and dedup's reasons with the strongest evidence (identical bytes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from test_mine_chain import _cfg

import glomssl.mining.separate as separate_mod
from glomssl.manifest import image_row, read_manifest, write_manifest
from glomssl.mining.dedup import DedupConfig, run_dedup
from glomssl.mining.dup_groups import PRIORITY, Links, group_rows
from glomssl.mining.pipeline import MineConfig, run_mine
from glomssl.mining.replay import Faults, ReplayServer, make_synthetic_replay
from glomssl.mining.separate import SeparateConfig, run_separate

DEMO = Path(__file__).resolve().parents[2] / "glomssl" / "assets" / "demo"


def _texture(seed: int, size: int = 96) -> Image.Image:
    """A blocky random picture: distinct perceptual hashes per seed, stable when enlarged."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((size, size), Image.Resampling.NEAREST)


# ----------------------------------------------------------------------------- 1. previews


SCORE = 0.37496  # labelled 0.37 unrounded, but the manifest stores 0.375, labelled 0.38


class _FixedSeparator:
    """Two panels per figure, one with a score whose label changes with the manifest's rounding."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def split(self, imgs: list[Image.Image]) -> list[list[tuple[tuple[int, ...], float]]]:
        return [[((0, 0, 60, 48), SCORE), ((60, 0, 120, 48), 0.9)] for _ in imgs]


def test_preview_of_a_run_equals_the_catch_up_preview(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert f"{SCORE:.2f}" != f"{round(SCORE, 4):.2f}"  # the case under test
    folder = tmp_path / "figs"
    folder.mkdir()
    Image.new("RGB", (120, 48), (255, 255, 255)).save(folder / "fig.png")
    monkeypatch.setattr(separate_mod, "Separator", _FixedSeparator)
    out = tmp_path / "sep"
    cfg = SeparateConfig(input=str(folder), out=str(out), method="classic", preview=1, quiet=True)
    run_separate(cfg)
    assert [r["score"] for r in read_manifest(out / "manifest.jsonl")] == [0.375, 0.9]
    (preview,) = (out / "previews").glob("*.png")
    with Image.open(preview) as im:
        drawn_in_run = np.asarray(im.convert("RGB"))
    preview.unlink()
    s = run_separate(cfg)  # nothing left to separate: the preview is drawn from the manifest
    assert s["skipped"] == 1 and preview.is_file()
    with Image.open(preview) as im:
        drawn_later = np.asarray(im.convert("RGB"))
    assert np.array_equal(drawn_in_run, drawn_later)


# ----------------------------------------------------------------------------- 2. requests


def test_mine_requests_count_every_search_retry(tmp_path: Path) -> None:
    folder = make_synthetic_replay(tmp_path / "rp", 9, per_article=3, size=16)
    # every path: one 429 and one 500 before it answers; later search pages once cut short JSON
    faults = Faults(max_page=4, first_429=1, first_500=1, first_bad_json=1, retry_after_s=0)
    with ReplayServer(folder, faults=faults) as server:
        cfg = MineConfig(
            query="glomerulus",
            out=str(tmp_path / "out"),
            endpoint=server.url,
            rate=0.0,
            workers=2,
            page_size=5,
            backoff_s=0.01,
            quiet=True,
            stop_after="download",
        )
        s = run_mine(cfg)
        searched = len(server.requests_to("/api/search"))
        sent = len(server.log)
    assert s.done == 9
    n_pages = 3  # 9 records, at most 4 served per page
    assert searched == n_pages * 3 + (n_pages - 1)  # 429 + 500 + answer; bad JSON on pages 2, 3
    assert s.requests == sent
    assert s.stages[0].counts["requests"] == searched


# ----------------------------------------------------------------------------- 3. float summaries


def test_mine_summary_keeps_float_values_and_reasons(tmp_path: Path) -> None:
    out = tmp_path / "corpus"
    with ReplayServer(DEMO) as server:
        s = run_mine(_cfg(server, out))  # the whole demo chain, as test_mine_chain runs it
    stages = {st["name"]: st["counts"] for st in json.loads(json.dumps(s.as_dict()))["stages"]}
    dedup = stages["dedup"]
    assert isinstance(dedup["embedding_threshold"], float)
    assert dedup["embedding_threshold"] >= 0.95  # a cosine, not int(0.95...) == 0
    assert isinstance(dedup["input"], int) and isinstance(dedup["dropped"], int)
    assert set(dedup["reasons"]) == {"sha256", "phash", "embedding"}
    assert sum(dedup["reasons"].values()) == dedup["dropped"]
    curate = stages["curate"]
    assert sum(curate["reasons"].values()) == curate["rejected"] > 0
    assert all(isinstance(v, int) for v in curate["reasons"].values())


# ----------------------------------------------------------------------------- 4. dedup reasons


def test_group_rows_reports_byte_copies_as_sha256() -> None:
    # 0 enlarged keeper; 1 its original (phash 0 to 0); 2 and 3 byte copies of 1 (sha256 star)
    links = Links(
        np.array([1, 1, 0, 0, 0]),
        np.array([2, 3, 1, 2, 3]),
        np.array([0, 0, 1, 1, 1], np.int8),
        np.array([0.0, 0.0, 0.0, 0.0, 0.0]),
    )
    g = group_rows(4, links, np.array([400.0, 100, 100, 100]), np.full(4, np.nan), "largest")
    assert g["keeper"].tolist() == [0, 0, 0, 0]
    assert g["reached"][1] == (0, PRIORITY["phash"], 0.0)
    assert g["reached"][2] == (1, PRIORITY["sha256"], 0.0)
    assert g["reached"][3] == (1, PRIORITY["sha256"], 0.0)
    # the keeper itself identical to a row: that row is sha256 via the keeper
    links = Links(np.array([1, 0]), np.array([2, 1]), np.array([0, 1], np.int8), np.zeros(2))
    g = group_rows(3, links, np.array([100.0, 50, 400]), np.full(3, np.nan), "largest")
    assert g["keeper"].tolist() == [2, 2, 2]
    assert g["reached"][1] == (2, PRIORITY["sha256"], 0.0)
    assert g["reached"][0] == (1, PRIORITY["phash"], 0.0)


def test_dedup_reports_a_copy_of_the_original_as_sha256(tmp_path: Path) -> None:
    folder = tmp_path / "panels"
    folder.mkdir()
    original = _texture(1)
    original.resize((192, 192), Image.Resampling.LANCZOS).save(folder / "a_big.png")
    original.save(folder / "a.png")
    (folder / "a_copy.png").write_bytes((folder / "a.png").read_bytes())
    _texture(2).save(folder / "b.png")
    names = ["a_big.png", "a.png", "a_copy.png", "b.png"]
    write_manifest(folder / "manifest.jsonl", [image_row(folder / n, folder) for n in names])
    out = tmp_path / "dedup"
    cfg = DedupConfig(
        input=str(folder / "manifest.jsonl"), out=str(out), methods=["sha256", "phash"], quiet=True
    )
    s = run_dedup(cfg)
    drops = {
        r["path"]: r for r in map(json.loads, (out / "dropped.jsonl").read_text().splitlines())
    }
    assert set(drops) == {"a.png", "a_copy.png"}
    assert drops["a_copy.png"]["reason"] == "sha256" and drops["a_copy.png"]["via"] == "a.png"
    assert drops["a.png"]["reason"] == "phash" and drops["a.png"]["via"] == "a_big.png"
    assert all(d["dup_of"] == "a_big.png" for d in drops.values())
    assert s["reasons"] == {"sha256": 1, "phash": 1}
