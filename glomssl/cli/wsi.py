"""``glomssl wsi SLIDE... --out DIR``: whole slides -> glomeruli table, ImageScope XML, QuPath GeoJSON.

Thin: options -> :class:`glomssl.slidechain.chain.WsiConfig` -> :func:`~glomssl.slidechain.chain.run_wsi`
-> one summary line (or ``--json``).
"""

from __future__ import annotations

import click

from glomssl.cli.common import config_options, drop_none, run_command
from glomssl.cli.detect import report_slides, slide_detection_options


@click.command("wsi")
@click.argument("slides", nargs=-1, required=True, type=click.Path())
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Results folder.")
@click.option("--detector", default=None, help="Detector weights (.safetensors) [shipped].")
@click.option("--classifier", default=None, help="`glomssl finetune cls` run folder (optional).")
@click.option("--segmenter", default=None, help="`glomssl finetune seg` run folder (optional).")
@click.option("--segment-class", default=None, help="Segmenter class to outline [its first].")
@slide_detection_options
@click.option("--no-crops", is_flag=True, help="Do not save a PNG crop per glomerulus.")
@click.option("--crop-um", type=float, default=None, help="Crop side in microns [320].")
@click.option("--crop-px", type=int, default=None, help="Crop side in pixels [320].")
@click.option("--view-context", type=float, default=None, help="Model view, in diameters [1.0].")
@click.option("--batch", type=int, default=None, help="Tiles per forward pass [1].")
@click.option("--device", default=None, help="auto, cpu, cuda or cuda:N [auto].")
@click.option("--devices", type=int, default=None, help="Worker processes, one per device [1].")
@click.option("--shard", default=None, help="i/n: this node's share of the slides (clusters).")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
@click.option("--quiet", is_flag=True, help="No progress lines.")
@config_options
def wsi(
    slides: tuple[str, ...],
    no_crops: bool,
    as_json: bool,
    quiet: bool,
    config_file: str | None,
    set_: tuple[str, ...],
    dry_run: bool,
    **kw: object,
) -> None:
    """Find the glomeruli of whole-slide images and write what pathologists open.

    For each slide (.svs, pyramidal .tif/.tiff, .ndpi, or a large PNG/JPEG): tissue tiles at a working
    resolution -> glomerulus detection merged across tile seams -> a crop per glomerulus -> class
    (with --classifier) -> outline (with --segmenter). Writes OUT/SLIDE/: SLIDE.xml (ImageScope),
    SLIDE.geojson (QuPath), glomeruli.csv, summary.json, overview.png, crops/. Rerun the same command
    to resume after a crash; finished slides and tiles are skipped.

    \b
    Example:
      glomssl wsi slides/*.svs --out results
      glomssl wsi big_field.png --slide-mpp 0.5 --out results --classifier runs/cls
    """
    from glomssl.slidechain.chain import WsiConfig, run_wsi

    overrides = drop_none(
        slides=list(slides),
        crops=False if no_crops else None,
        quiet=quiet or None,
        **kw,
    )
    summary = run_command(WsiConfig, config_file, overrides, run_wsi, dry_run=dry_run, sets=set_)
    files = "SLIDE.xml, SLIDE.geojson, glomeruli.csv, summary.json, overview.png"
    report_slides("wsi", summary, as_json, quiet, files)
