"""Issue 10 in the mining commands: bad inputs and faults that used to abort, mislead or leak.

Each test fails on the code before the fix: a decompression bomb aborted curate/dedup, dedup trusted a
manifest's sha256, a refused ``mine`` overwrote config.yaml, bad ``stage_options`` surfaced only after
search and download, curate passed repeated rows through and pointed at files outside --out, outputs
were 0600, an empty search or an empty curation ended in an error, and a cut-short search page after
the first was fatal.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from glomssl.cli import cli
from glomssl.errors import GlomsslError
from glomssl.manifest import image_row, read_manifest, write_manifest
from glomssl.mining.curate import CurateConfig, run_curate
from glomssl.mining.dedup import DedupConfig, run_dedup
from glomssl.mining.pipeline import MineConfig, run_mine
from glomssl.mining.replay import Faults, ReplayServer, make_synthetic_replay

DEMO = Path(__file__).resolve().parents[2] / "glomssl" / "assets" / "demo"


def bomb_png(path: Path, side: int = 20_000) -> Path:
    """A tiny PNG whose header claims side x side pixels (400 Mpx: over the decoder's cap)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def tissue_like(seed: int, size: int = 120) -> Image.Image:
    """A pink-and-purple textured picture that the curation statistics keep."""
    rng = np.random.default_rng(seed)
    a = np.empty((size, size, 3))
    a[:] = (220, 160, 200)
    a += rng.normal(0, 18, (size, size, 3)) * np.array([1.0, 1.2, 0.8])
    return Image.fromarray(a.clip(0, 255).astype(np.uint8))


@pytest.fixture()
def panels(tmp_path: Path) -> Path:
    folder = tmp_path / "panels"
    folder.mkdir()
    for k in range(3):
        tissue_like(k).save(folder / f"t{k}.png")
    return folder


def test_decompression_bomb_is_skipped_and_listed(tmp_path: Path, panels: Path) -> None:
    bomb_png(panels / "bomb.png")
    s = run_curate(CurateConfig(input=str(panels), out=str(tmp_path / "c"), quiet=True))
    assert (s["kept"], s["skipped"]) == (3, 1)
    listed = [json.loads(x) for x in (tmp_path / "c" / "skipped.jsonl").read_text().splitlines()]
    assert [Path(r["path"]).name for r in listed] == ["bomb.png"] and "pixels" in listed[0][
        "reason"
    ]
    for methods in (["sha256"], ["sha256", "phash", "embedding"]):
        out = tmp_path / f"d{len(methods)}"
        s = run_dedup(DedupConfig(input=str(panels), out=str(out), methods=methods, quiet=True))
        assert (s["kept"], s["skipped"]) == (3, 1), methods
        assert "bomb.png" in (out / "skipped.jsonl").read_text()


def test_dedup_hashes_the_bytes_instead_of_trusting_the_manifest(
    tmp_path: Path, panels: Path
) -> None:
    rows = [image_row(panels / f"t{k}.png", panels, uid=f"u{k}") for k in range(3)]
    rows[2]["sha256"] = rows[0]["sha256"]  # stale: t2's row claims t0's hash
    write_manifest(panels / "manifest.jsonl", rows)
    out = tmp_path / "d"
    s = run_dedup(
        DedupConfig(
            input=str(panels / "manifest.jsonl"), out=str(out), methods=["sha256"], quiet=True
        )
    )
    assert (s["kept"], s["dropped"]) == (3, 0)
    assert s["rehashed"] == 1
    kept = {r["uid"]: r for r in read_manifest(out / "manifest.jsonl")}
    assert kept["u2"]["sha256"] == image_row(panels / "t2.png", panels)["sha256"]  # corrected


def test_curate_measures_by_the_bytes_not_the_claimed_hash(tmp_path: Path, panels: Path) -> None:
    """Two different files claiming one sha256 must not share cached measurements."""
    white = panels / "blank.png"
    Image.new("RGB", (120, 120), "white").save(white)
    rows = [image_row(panels / "t0.png", panels), image_row(white, panels)]
    rows[1]["sha256"] = rows[0]["sha256"]
    write_manifest(panels / "manifest.jsonl", rows)
    s = run_curate(
        CurateConfig(input=str(panels / "manifest.jsonl"), out=str(tmp_path / "c"), quiet=True)
    )
    assert s["kept"] == 1 and s["reasons"] == {"blank": 1}
    assert s["rehashed"] == 1


def test_refused_mine_leaves_the_config_of_the_running_one(tmp_path: Path) -> None:
    import fcntl

    folder = make_synthetic_replay(tmp_path / "rp", 2, size=8)
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.yaml").write_text("query: the running miner's\n")
    with open(out / ".mine.lock", "a+b") as fh, ReplayServer(folder) as server:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        cfg = MineConfig(query="glomerulus", out=str(out), endpoint=server.url, quiet=True)
        with pytest.raises(GlomsslError, match="another `glomssl mine`"):
            run_mine(cfg)
    assert (out / "config.yaml").read_text() == "query: the running miner's\n"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"curate": {"threshold": 5}}, r"stage_options\.curate: --threshold must be"),
        ({"dedup": {"cosine": "high"}}, r"stage_options\.dedup: --cosine: expected a number"),
        ({"dedup": {"speed": 3}}, r"stage_options\.dedup: .*unknown option\(s\) speed"),
        ({"curate": {"input": "x"}}, r"stage_options\.curate: input is set by"),
        ({"separate": {"method": "magic"}}, r"stage_options\.separate: --method"),
    ],
)
def test_bad_stage_options_fail_before_any_request(
    tmp_path: Path, options: dict, message: str
) -> None:
    folder = make_synthetic_replay(tmp_path / "rp", 3, size=8)
    with ReplayServer(folder) as server:
        cfg = MineConfig(
            query="glomerulus", out=str(tmp_path / "o"), endpoint=server.url, rate=0, quiet=True
        )
        cfg.stage_options = options
        with pytest.raises(GlomsslError, match=message):
            run_mine(cfg)
        assert server.log == []  # not one request was sent
    assert not (tmp_path / "o").exists()


def test_mine_cli_checks_stage_options_in_dry_run(tmp_path: Path) -> None:
    conf = tmp_path / "mine.yaml"
    conf.write_text("stage_options:\n  curate: {min_side: -3}\n")
    res = CliRunner().invoke(
        cli,
        ["mine", "--query", "g", "--out", str(tmp_path / "o"), "--config", str(conf), "--dry-run"],
    )
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1
    assert "stage_options.curate: --min-side" in res.output


def test_curate_keeps_a_repeated_row_once(tmp_path: Path, panels: Path) -> None:
    rows = [image_row(panels / f"t{k}.png", panels, uid=f"u{k}") for k in range(3)]
    write_manifest(panels / "manifest.jsonl", [rows[0], rows[1], rows[0], rows[2], rows[1]])
    out = tmp_path / "c"
    s = run_curate(CurateConfig(input=str(panels / "manifest.jsonl"), out=str(out), quiet=True))
    assert sorted(r["uid"] for r in read_manifest(out / "manifest.jsonl")) == ["u0", "u1", "u2"]
    assert (s["kept"], s["repeats"]) == (3, 2)


def test_symlinked_inputs_never_leave_out(tmp_path: Path, panels: Path) -> None:
    """A link inside OUT whose target is outside, and a link outside OUT: the kept files are real
    files inside OUT (the targets' bytes), not links that lead out of it."""
    out = tmp_path / "corpus"
    linked = out / "panels"
    linked.mkdir(parents=True)
    for k in range(3):
        (linked / f"l{k}.png").symlink_to(panels / f"t{k}.png")
    s = run_curate(CurateConfig(input=str(linked), out=str(out), quiet=True))
    assert s["kept"] == 3
    real_out = out.resolve()
    for row in read_manifest(out / "manifest.jsonl"):
        f = out / row["path"]
        assert not f.is_symlink() and f.resolve().is_relative_to(real_out), row["path"]
    elsewhere = tmp_path / "links"
    elsewhere.mkdir()
    (elsewhere / "x.png").symlink_to(panels / "t0.png")
    out2 = tmp_path / "c2"
    run_curate(CurateConfig(input=str(elsewhere), out=str(out2), quiet=True))
    row = read_manifest(out2 / "manifest.jsonl")[0]
    f = out2 / row["path"]
    assert not f.is_symlink() and f.read_bytes() == (panels / "t0.png").read_bytes()


def test_outputs_follow_the_umask(tmp_path: Path, panels: Path) -> None:
    mask = os.umask(0o022)
    os.umask(mask)
    want = 0o666 & ~mask
    out = tmp_path / "c"
    run_curate(CurateConfig(input=str(panels), out=str(out), quiet=True))
    run_dedup(DedupConfig(input=str(panels), out=str(tmp_path / "d"), quiet=True))
    for f in [
        out / "manifest.jsonl",
        out / "rejected.jsonl",
        out / "curate.yaml",
        tmp_path / "d" / "dropped.jsonl",
    ]:
        assert f.stat().st_mode & 0o777 == want, f


def test_empty_search_is_a_result(tmp_path: Path) -> None:
    # the records are about glomeruli and kidneys, none about the liver
    folder = make_synthetic_replay(tmp_path / "rp", 4, size=8)
    with ReplayServer(folder) as server:
        args = ["mine", "--query", "liver", "--out", str(tmp_path / "o"), "--endpoint", server.url]
        res = CliRunner().invoke(cli, [*args, "--rate", "0"])
        assert res.exit_code == 0, res.output
        assert res.output.startswith("0 figures found for 'liver'")
        assert len(res.output.strip().splitlines()) == 1
        again = CliRunner().invoke(cli, [*args, "--rate", "0", "--json"])
    assert again.exit_code == 0 and json.loads(again.output)["found"] == 0
    out = tmp_path / "o"
    for m in ("manifest.jsonl", "figures/manifest.jsonl", "dedup/manifest.jsonl"):
        assert read_manifest(out / m) == [], m


def test_curation_that_keeps_nothing_is_a_result(tmp_path: Path) -> None:
    out = tmp_path / "corpus"
    opts = {"separate": {"method": "classic"}, "curate": {"min_side": 10_000}}
    with ReplayServer(DEMO) as server:
        cfg = MineConfig(
            query="microscopy OR histology",
            out=str(out),
            endpoint=server.url,
            rate=0,
            quiet=True,
            stage_options=opts,
        )
        s = run_mine(cfg)
    panels = len(read_manifest(out / "panels" / "manifest.jsonl"))
    assert panels > 0 and s.empty is not None
    assert s.empty.startswith(f"curation kept 0 of {panels} (reasons in ")
    assert "rejected.jsonl" in s.empty and "the later stages were skipped" in s.paragraph()
    assert read_manifest(out / "dedup" / "manifest.jsonl") == []
    assert read_manifest(out / "manifest.jsonl") == []
    assert [r.name for r in s.stages if r.skipped] == ["dedup"]


def test_cut_short_search_page_after_the_first_is_retried(tmp_path: Path) -> None:
    folder = make_synthetic_replay(tmp_path / "rp", 9, size=8)
    with ReplayServer(folder, faults=Faults(max_page=3, first_bad_json=2)) as server:
        s = run_mine(
            MineConfig(
                query="glomerulus",
                out=str(tmp_path / "o"),
                endpoint=server.url,
                rate=0,
                page_size=3,
                backoff_s=0.01,
                quiet=True,
                stop_after="download",
            )
        )
        searches = [r.path for r in server.requests_to("/api/search")]
    assert (s.found, s.done) == (9, 9)
    assert len(searches) == 1 + 3 + 3  # page 1 once, pages 2 and 3 twice cut short, then whole


def test_cut_short_pages_beyond_the_retries_stop_with_one_line(tmp_path: Path) -> None:
    folder = make_synthetic_replay(tmp_path / "rp", 6, size=8)
    with ReplayServer(folder, faults=Faults(max_page=3, first_bad_json=10)) as server:
        cfg = MineConfig(
            query="glomerulus",
            out=str(tmp_path / "o"),
            endpoint=server.url,
            rate=0,
            page_size=3,
            max_retries=2,
            backoff_s=0.01,
            quiet=True,
            stop_after="download",
        )
        with pytest.raises(GlomsslError, match="3 times with a body that is not JSON") as info:
            run_mine(cfg)
    assert "\n" not in str(info.value)
