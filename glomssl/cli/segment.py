"""``glomssl segment``: segment images or whole slides (calls
:func:`glomssl.finetune.segmenter.predict.run_segment`)."""

from __future__ import annotations

from typing import Any

import click

from glomssl.cli.common import config_options, csv_tuple, drop_none


@click.command("segment")
@click.option(
    "--model", required=True, help="`glomssl finetune seg` run folder or model.safetensors."
)
@click.option("--input", "input_", multiple=True, required=True,
              help="Image folder, manifest/table, or slide file(s).")  # fmt: skip
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--classes", default=None, help="Comma-separated subset of the model's classes.")
@click.option("--tile", type=int, default=None, help="Tile size in pixels [the model's size].")
@click.option("--overlap", type=int, default=None, help="Tile overlap in pixels [tile/8].")
@click.option("--scale", type=float, default=None, help="Resize images by this factor first "
              "[the model's input scale].")  # fmt: skip
@click.option("--level", type=int, default=None, help="Slides: pyramid level to read.")
@click.option("--mpp", type=float, default=None, help="Slides: microns per pixel to read at.")
@click.option("--slide-mpp", type=float, default=None,
              help="Slides: the slide's own microns per pixel, when the file lacks it.")  # fmt: skip
@click.option("--as-slides", is_flag=True, default=None,
              help="Read PNG/JPEG inputs as one-level slides (polygons in GeoJSON/XML).")  # fmt: skip
@click.option("--threshold", type=float, default=None, help="Probability cut-off [0.5].")
@click.option("--probabilities", is_flag=True, default=None, help="Also save probabilities.")
@click.option("--label-map", is_flag=True, default=None, help="One label map, not per-class masks.")
@click.option("--stitch", type=click.Choice(["blend", "centre"]), default=None, help="[blend].")
@click.option("--min-area", "min_area_um2", type=float, default=None,
              help="Slides: drop objects smaller than this (um^2, or px^2 without mpp) [0].")  # fmt: skip
@click.option("--batch-size", type=int, default=None, help="Tiles per forward pass [4].")
@click.option("--device", default=None, help="auto, cpu, cuda or cuda:N [auto].")
@config_options
@click.option("--quiet", is_flag=True, default=None, help="No progress lines.")
def segment(config_file: str | None, set_: tuple[str, ...], dry_run: bool, **kw: Any) -> None:
    """Segment images or whole slides with a trained segmenter: every class from one pass per tile.

    \b
    Images: per-class mask PNGs, overlays, optional probabilities, outputs.jsonl.
    Slides: per-class polygons as GeoJSON (QuPath) and ImageScope XML, a CSV of objects and areas.
    \b
    Example:
      glomssl segment --model runs/seg --input slides/case1.svs --out seg_case1 --mpp 1.0
    """
    from glomssl.cli.common import run_command
    from glomssl.finetune.segmenter.predict import SegmentConfig, run_segment

    over = drop_none(**kw)
    over["input"] = list(over.pop("input_", ()))
    if kw.get("classes") is not None:
        over["classes"] = list(csv_tuple(kw["classes"]) or ())
    res = run_command(SegmentConfig, config_file, over, run_segment, dry_run=dry_run, sets=set_)
    if res is None:
        return
    if "slides" in res:
        click.echo(
            f"segmented {res['slides']} slide(s) ({','.join(res['classes'])}): "
            f"{res['objects']} objects -> {res['out']}"
        )
        return
    line = (
        f"segmented {res['images']} image(s) ({','.join(res['classes'])}) at scale "
        f"{res['scale']:.3g}, tile {res['tile']} -> {res['out']}"
    )
    if res.get("mean_dice") is not None:
        line += f"; mean Dice vs the table's masks {res['mean_dice']:.3f} ({res['scores']})"
    if res.get("skipped"):
        line += f"; {res['skipped']} unreadable image(s) skipped (skipped.jsonl)"
    click.echo(line)
