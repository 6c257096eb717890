"""``make demo`` / ``python -m glomssl.demo --out demo_out``: the toolkit end to end on bundled data.

The demo is a list of steps (:data:`STEPS`) run in order on a shared :class:`DemoState`; later issues
append their steps (separate, curate, dedup, pretrain ...) with :func:`add_step`. Today it:

1. starts the offline Open-i replay server (127.0.0.1, a thread) on ``glomssl/assets/demo`` — real CC0/BSD
   microscopy images and compound figures, served in Open-i's exact response shape, with capped pages
   and a few injected HTTP 500s so the miner's retries are exercised;
2. runs the ``glomssl mine`` pipeline against it into ``OUT/corpus``;
3. prints what it built;
4. pretrains an encoder for a few steps and embeds the corpus (a wiring check);
5. trains the glomerulus segmenter for a few minutes on 11 shipped aidpath tiles (real PAS kidney,
   CC BY 4.0) and segments the 12th, printing its Dice beside the all-foreground prior;
6. builds a small pyramidal slide from those tiles and runs ``glomssl wsi`` on it (detect, crops,
   ImageScope XML, QuPath GeoJSON, table).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glomssl.errors import GlomsslError

DEMO_DATA = Path(__file__).resolve().parent / "assets" / "demo"
DEMO_QUERY = "microscopy OR histology"
#: The demo corpus is bound to the bundled data, not to the port its replay happened to get.
DEMO_ENDPOINT_ID = "glomssl-demo-replay"


@dataclass
class DemoState:
    out: Path
    quiet: bool = False
    server: Any = None  # ReplayServer
    results: dict[str, Any] = field(default_factory=dict)
    cleanup: list[Callable[[], None]] = field(default_factory=list)


DemoStep = Callable[[DemoState], None]
STEPS: list[tuple[str, DemoStep]] = []


def add_step(title: str, fn: DemoStep) -> None:
    """Append a step to the demo (later stages register theirs here)."""
    STEPS.append((title, fn))


def start_replay(state: DemoState) -> None:
    from glomssl.mining.replay import Faults, ReplayServer

    faults = Faults(max_page=7, p_500=0.1, seed=1)
    try:
        server = ReplayServer(DEMO_DATA, port=8765, faults=faults)
    except GlomsslError:  # port taken: any free port
        server = ReplayServer(DEMO_DATA, port=0, faults=faults)
    state.server = server.start()
    state.cleanup.append(server.stop)
    print(f"  Open-i replay of {len(server.records)} records at {server.url}")
    print("  (pages capped at 7 records, ~10% of requests answered with HTTP 500)")


def mine(state: DemoState) -> None:
    from glomssl.mining.pipeline import MineConfig, run_mine

    corpus = state.out / "corpus"
    cfg_file = corpus / "config.yaml"
    if cfg_file.is_file() and f"endpoint_id: {DEMO_ENDPOINT_ID}\n" not in cfg_file.read_text():
        print(f"  {corpus} was mined by an older demo; starting it afresh")
        shutil.rmtree(corpus)
    cfg = MineConfig(
        query=DEMO_QUERY,
        out=str(corpus),
        endpoint=state.server.url,
        endpoint_id=DEMO_ENDPOINT_ID,  # the replay may listen on another port next time
        image_type="mc",
        page_size=10,
        rate=20.0,
        workers=4,
        backoff_s=0.1,
        quiet=state.quiet,
    )
    print(
        f'  glomssl mine --query "{cfg.query}" --image-type mc --endpoint {cfg.endpoint} '
        f"--out {corpus} --rate 20 --workers 4 --set endpoint_id={DEMO_ENDPOINT_ID}"
    )
    summary = run_mine(cfg)
    state.results["mine"] = summary
    print("  " + summary.paragraph())


def report(state: DemoState) -> None:
    from glomssl.manifest import read_manifest

    summary = state.results["mine"]
    out = summary.out
    stages = [
        ("figures", "figures downloaded and checked"),
        ("panels", "panels cut from them"),
        ("curated", "panels kept as light-microscopy tissue"),
        ("dedup", "panels left after de-duplication"),
    ]
    for folder, what in stages:
        m = out / folder / "manifest.jsonl"
        if m.is_file():
            print(f"  {len(read_manifest(m)):4d} {what:42s} {m.relative_to(out.parent)}")
    rejected = out / "curated" / "rejected.jsonl"
    if rejected.is_file():
        reasons: dict[str, int] = {}
        for line in rejected.read_text().splitlines():
            r = json.loads(line)["reason"]
            reasons[r] = reasons.get(r, 0) + 1
        print("  curation dropped: " + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())))
    rows = read_manifest(out / "manifest.jsonl")
    uids = {r["uid"] for r in rows}
    print(f"  corpus: {len(rows)} images from {len(uids)} articles; a few rows:")
    for r in rows[:3]:
        print(f"    {r['path']}  {r['width']}x{r['height']}  {r['uid']}/{r['image_id']}")
        print(f"      caption: {r['caption'][:100]}")
    failures = (out / "figures" / "failures.jsonl").read_text().splitlines()
    for line in failures:
        f = json.loads(line)
        print(f"    failed: {f['uid']}/{f['image_id']}: {f['reason']}")
    print(f"  manifest: {out / 'manifest.jsonl'}; state: {out / 'state.sqlite'}")


def pretrain(state: DemoState) -> None:
    """A few VICReg steps (the default method) on the corpus and an embedding of it, end to end.

    Ten steps at 64 px prove the wiring (corpus manifest -> run folder -> exported encoder ->
    embeddings), not a useful encoder; see the README for real settings.
    """
    import numpy as np

    from glomssl.config import build_config
    from glomssl.ssl.embed import EmbedConfig, run_embed
    from glomssl.ssl.train import PretrainConfig, run_pretrain

    corpus = state.results["mine"].out / "manifest.jsonl"
    run = state.out / "pretrain"
    print(
        f"  glomssl pretrain --method vicreg --data {corpus} --out {run} "
        "--image-size 64 --batch-size 8 --max-steps 10 --warmup-steps 2 --workers 0"
    )
    cfg = build_config(
        PretrainConfig,
        None,
        {
            "method": "vicreg",
            "data": [str(corpus)],
            "out": str(run),
            "image_size": 64,
            "batch_size": 8,
            "max_steps": 10,
            "warmup_steps": 2,  # the default 40-step warm-up is for real runs
            "workers": 0,
            "hardware": {"accelerator": "cpu"},
            "resume": run.is_dir(),  # a rerun continues (or changes nothing), never refused
            "quiet": True,
        },
    )
    summary = run_pretrain(cfg)
    state.results["pretrain"] = summary
    print(f"  encoder: {run / 'backbone.safetensors'} (+ backbone.json, metrics.jsonl)")
    emb = state.out / "corpus_embeddings.npz"
    print(f"  glomssl embed --checkpoint {run} --input {corpus} --out {emb}")
    run_embed(
        EmbedConfig(
            checkpoint=str(run),
            input=str(corpus),
            out=str(emb),
            workers=0,
            device="cpu",
            quiet=True,
        )
    )
    with np.load(emb) as z:
        shape = z["embeddings"].shape
    print(f"  {shape[0]} corpus images -> {shape[1]}-d vectors in {emb}")


add_step("Start the offline Open-i replay server", start_replay)
add_step("Mine: search, download, separate, curate, dedup", mine)
add_step("What was built", report)
add_step(
    "Pretrain an encoder on the corpus (10 VICReg steps: a wiring check) and embed it", pretrain
)


def segment(state: DemoState) -> None:
    """Train the segmenter on 11 shipped aidpath tiles for a few minutes, segment the 12th."""
    from glomssl.finetune.segmenter.demo import run_demo_step

    out = state.out / "segmenter"
    print(
        f"  glomssl finetune seg --train {out / 'data' / 'train.csv'} --out {out / 'seg_run'} ..."
    )
    r = run_demo_step(out, quiet=True)
    state.results["segment"] = r
    print(
        f"  {r['steps']} steps on {r['train_tiles']} tiles; held-back tile {r['held_out']}: "
        f"Dice {r['dice']:.3f} (all-foreground prior {r['dice_all_foreground']:.3f}), "
        f"boundary F1 {r['boundary_f1']:.3f}"
    )
    print(f"  overlay: {r['overlay']}; model: {r['model']}")


def wsi(state: DemoState) -> None:
    """A small pyramidal slide of real tissue through ``glomssl wsi`` with the shipped detector."""
    from glomssl.slidechain.demo import run_demo_step

    out = state.out / "wsi"
    print(f"  glomssl wsi {out / 'demo_slide.tif'} --out {out / 'wsi'}")
    r = run_demo_step(out, quiet=True)
    state.results["wsi"] = r
    print(f"  {r['glomeruli']} glomeruli detected; table: {r['table']}")
    print(f"  ImageScope: {r['xml']}; QuPath: {r['geojson']}; overview: {r['overview']}")


add_step("Segment glomeruli: train on 11 real tiles for a few minutes, test on the 12th", segment)
add_step("Whole slide: detect glomeruli on a small pyramidal slide, write XML/GeoJSON/table", wsi)


def run_demo(
    out: str | Path, quiet: bool = False, steps: list[tuple[str, DemoStep]] | None = None
) -> DemoState:
    """Run the demo steps in order (all of :data:`STEPS` by default); returns the state (for tests)."""
    from glomssl.fsutil import ensure_writable_dir

    todo = STEPS if steps is None else steps
    state = DemoState(ensure_writable_dir(out, "--out"), quiet=quiet)
    try:
        for i, (title, fn) in enumerate(todo, start=1):
            print(f"[{i}/{len(todo)}] {title}")
            fn(state)
    finally:
        for stop in reversed(state.cleanup):
            stop()
    return state


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m glomssl.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="demo_out", help="output folder [demo_out]")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    try:
        run_demo(args.out, args.quiet)
    except GlomsslError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
