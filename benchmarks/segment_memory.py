"""Peak memory of ``glomssl segment`` on whole slides: tiles stream, the canvas lives on disk.

Runs the real command in a child process (a segmenter exported here with random weights: memory does
not depend on what the weights learned) on (a) the real CMU-1-Small-Region SVS in ../shared/data/wsi
and (b) a large synthetic pyramidal TIFF written here tile by tile (``--side`` px square at 0.25 um/px,
levels /1, /2, /4, /8, uncompressed), and reports the child's peak RSS next to the slide's raw size at
level 0 and at the working resolution. Prints ONE JSON line.

Usage: ``OMP_NUM_THREADS=1 nice python benchmarks/segment_memory.py --side 32768 --mpp 4``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def synthetic_slide(path: Path, side: int, mpp: float = 0.25, tile: int = 512) -> Path:
    """A pyramidal TIFF of ``side`` x ``side`` px, written tile by tile (bounded memory)."""
    import tifffile

    def tiles(level_side: int, down: int) -> Any:
        rng = np.random.default_rng(down)
        base = np.full((tile, tile, 3), 245, np.uint8)
        tissue = base.copy()
        tissue[:] = (220, 140, 190)
        yy, xx = np.mgrid[:tile, :tile]
        disk = (yy - tile / 2) ** 2 + (xx - tile / 2) ** 2 < (tile / 4) ** 2
        tissue[disk] = (120, 60, 140)
        for ty in range(0, level_side, tile):
            for tx in range(0, level_side, tile):
                on = ((ty * down // 4096) + (tx * down // 4096)) % 3 != 0  # tissue blocks
                t = tissue if on else base
                yield (t + rng.integers(0, 8, (1, 1, 3), dtype=np.uint8)).astype(np.uint8)

    opts = {"tile": (tile, tile), "photometric": "rgb", "resolutionunit": "CENTIMETER"}
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write(tiles(side, 1), shape=(side, side, 3), dtype=np.uint8, subifds=3,
                 resolution=(1e4 / mpp, 1e4 / mpp), **opts)  # fmt: skip
        for k in (2, 4, 8):
            s = side // k
            tw.write(tiles(s, k), shape=(s, s, 3), dtype=np.uint8, subfiletype=1,
                     resolution=(1e4 / (mpp * k), 1e4 / (mpp * k)), **opts)  # fmt: skip
    return path


def run_child(model: Path, slide: Path, out: Path, extra: list[str]) -> dict[str, Any]:
    code = (
        "import resource, sys; from glomssl.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    rc = e.code\n"
        "print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
        "sys.exit(rc)\n"
    )
    args = ["segment", "--model", str(model), "--input", str(slide), "--out", str(out), "--quiet",
            "--device", "cpu", *extra]  # fmt: skip
    t = time.time()
    p = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(p.stderr[-2000:])
    peak = [ln for ln in p.stderr.splitlines() if ln.startswith("PEAK_KB")][-1].split()[1]
    summ = json.loads(next(out.glob("*/summary.json")).read_text())
    return {"peak_rss_mb": round(int(peak) / 1024, 1), "seconds": round(time.time() - t, 1),
            "tiles": summ["tiles"], "level": summ["level"],
            "working_mpp": summ["working_mpp"]}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", type=int, default=32768)
    ap.add_argument("--mpp", type=float, default=4.0, help="working resolution on the big slide")
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--work", default=None)
    a = ap.parse_args()
    import torch

    from glomssl.finetune.segmenter.infer import export_segmenter
    from glomssl.models import create_model

    work = Path(a.work or tempfile.mkdtemp(prefix="segmem-"))
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = create_model("dynamic", classes=["Cap", "Tuft", "GS"], base=32).eval()
    export_segmenter(model, work / "model", {"image_size": a.tile, "input_scale": 1.0})
    shared = Path(os.environ.get("GLOMSSL_SHARED_DATA", Path(__file__).resolve().parents[2] /
                                 "shared" / "data"))  # fmt: skip
    res: dict[str, Any] = {"benchmark": "segment_memory", "machine": "2-core CPU, shared/noisy",
                           "model": "dynamic, resunet base 32, 3 classes", "tile": a.tile}  # fmt: skip
    cmu = shared / "wsi" / "cmu_small_region.svs"
    if cmu.is_file():
        r = run_child(work / "model", cmu, work / "out_cmu", ["--tile", str(a.tile),
                                                              "--overlap", "64"])  # fmt: skip
        r["slide_px"] = "2220x2967"
        r["raw_level0_mb"] = round(2220 * 2967 * 3 / 2**20, 1)
        res["cmu_small_region"] = r
    big = synthetic_slide(work / "big.tif", a.side)
    r = run_child(work / "model", big, work / "out_big",
                  ["--tile", str(a.tile), "--overlap", "64", "--mpp", str(a.mpp)])  # fmt: skip
    r["slide_px"] = f"{a.side}x{a.side}"
    r["raw_level0_mb"] = round(a.side * a.side * 3 / 2**20, 1)
    res["synthetic"] = r
    res["baseline_python_torch_mb"] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
    )  # this parent process: torch + the model, for scale
    print(json.dumps(res))


if __name__ == "__main__":
    main()
