"""Throughput and memory of ``glomssl wsi`` on large pyramidal slides of real tissue.

Builds (once, cached in --work) tiled JPEG pyramidal TIFFs at 0.5 um/px from the shipped aidpath
tiles (real PAS kidney, CC BY 4.0): a large one (default 40,000 x 30,000 px) and one with a quarter of
its pixels (20,000 x 15,000). Runs the full chain (detect, merge, crops, outputs) on each in a fresh
subprocess with the shipped detector and measures wall time and the subprocess's peak RSS. Memory is
bounded when the large slide's peak RSS is about the small one's (ratio near 1 for 4x the pixels).

Prints ONE JSON line: per slide size, tiles, seconds, tiles/s, level-0 megapixels/s, peak RSS (MB),
glomeruli; plus the RSS ratio large/small.

    python benchmarks/wsi_speed.py --work /tmp/wsi_speed                     # CPU
    python benchmarks/wsi_speed.py --work /tmp/wsi_speed --device cuda --batch 8
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build(path: Path, width: int, height: int) -> Path:
    from glomssl.slidechain.demo import ASSETS
    from glomssl.slidechain.pyramid import load_tiles, tiled_source, write_pyramid

    if path.is_file():
        return path
    tiles = load_tiles(ASSETS / "images")
    region = tiled_source(tiles, width, height, margin=2048, seed=0)
    return write_pyramid(path, region, width, height, 0.5)


def run_chain(slide: Path, out: Path, device: str, batch: int) -> dict[str, object]:
    """One ``glomssl wsi`` subprocess; its wall time and peak RSS (ru_maxrss of the child)."""
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [
        sys.executable,
        "-m",
        "glomssl",
        "wsi",
        str(slide),
        "--out",
        str(out),
        "--device",
        device,
        "--batch",
        str(batch),
        "--json",
        "--quiet",
    ]
    log = out.with_suffix(".log")
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS
    wall = time.perf_counter() - t0
    peak_kb = usage.ru_maxrss
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"glomssl wsi failed: {log.read_text().strip().splitlines()[-1:]}")
    lines = [ln for ln in log.read_text().splitlines() if ln.startswith("{")]
    run = json.loads(lines[-1])
    summary = json.loads((out / slide.stem / "summary.json").read_text())
    w, h = summary["width"], summary["height"]
    det_s = summary["detect_seconds"]
    return {
        "slide": f"{w}x{h}",
        "tiles": summary["tiles"],
        "seconds": round(wall, 1),
        "detect_seconds": det_s,
        "tiles_per_s": round(summary["tiles"] / det_s, 3),
        "megapixels_per_s": round(w * h / 1e6 / wall, 2),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "glomeruli": run["glomeruli"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", required=True)
    ap.add_argument("--width", type=int, default=40000)
    ap.add_argument("--height", type=int, default=30000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=1)
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    small = build(
        work / f"small_{args.width // 2}x{args.height // 2}.tif", args.width // 2, args.height // 2
    )
    large = build(work / f"large_{args.width}x{args.height}.tif", args.width, args.height)
    build_s = time.perf_counter() - t0
    r_small = run_chain(small, work / "out_small", args.device, args.batch)
    r_large = run_chain(large, work / "out_large", args.device, args.batch)
    result = {
        "device": args.device,
        "batch": args.batch,
        "cpus": os.cpu_count(),
        "build_seconds": round(build_s, 1),
        "small": r_small,
        "large": r_large,
        "rss_ratio_large_over_small": round(
            float(r_large["peak_rss_mb"]) / float(r_small["peak_rss_mb"]),
            3,  # type: ignore[arg-type]
        ),
        "pixel_ratio": 4.0,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
