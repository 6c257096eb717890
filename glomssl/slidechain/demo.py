"""The demo's last step: ``glomssl wsi`` on a small pyramidal slide of real kidney tissue.

The slide is built from the 12 aidpath tiles shipped in ``glomssl/assets/aidpath`` (real PAS human
kidney at about 0.5 um/px, CC BY 4.0; attribution in the README there): a 4 x 3 grid of 1024-px tiles
on a glass margin, written as a tiled JPEG pyramid with its resolution in the TIFF tags. The chain
then runs on it with the shipped detector, on the CPU.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "aidpath"
DEMO_MPP = 0.5


def make_demo_slide(path: str | os.PathLike[str], margin: int = 512) -> Path:
    """Write the demo slide (about 5,100 x 4,100 px, 0.5 um/px) from the shipped aidpath tiles."""
    from glomssl.slidechain.pyramid import load_tiles, tiled_source, write_pyramid

    tiles = load_tiles(ASSETS / "images")
    th, tw = tiles[0].shape[:2]
    width, height = 4 * tw + 2 * margin, 3 * th + 2 * margin
    region = tiled_source(tiles, width, height, margin, seed=0)
    return write_pyramid(path, region, width, height, DEMO_MPP)


def run_demo_step(out_dir: str | os.PathLike[str], quiet: bool = True) -> dict[str, Any]:
    """Build the demo slide in ``out_dir`` and run ``glomssl wsi`` on it; where the outputs are.

    Returns ``{"slide", "xml", "geojson", "table", "overview", "glomeruli", "summary"}`` (paths as
    strings). Rerunning reuses the slide and resumes the finished run.
    """
    from glomssl.slidechain.chain import WsiConfig, run_wsi

    out = Path(out_dir)
    slide = out / "demo_slide.tif"
    if not slide.is_file():
        make_demo_slide(slide)
    results = out / "wsi"
    summary = run_wsi(WsiConfig(slides=[str(slide)], out=str(results), device="cpu", quiet=quiet))
    folder = results / slide.stem
    return {
        "slide": str(slide),
        "xml": str(folder / f"{slide.stem}.xml"),
        "geojson": str(folder / f"{slide.stem}.geojson"),
        "table": str(folder / "glomeruli.csv"),
        "overview": str(folder / "overview.png"),
        "summary": str(folder / "summary.json"),
        "glomeruli": summary["glomeruli"],
    }
