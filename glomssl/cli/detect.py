"""``glomssl detect`` (glomeruli on slides), ``detect data`` (training tiles), ``detect train``.

Thin: options -> one dataclass config -> one library function -> one summary line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from glomssl.cli import CommandGroup
from glomssl.cli.common import config_options, drop_none, echo_json, run_command

F = TypeVar("F", bound=Callable[..., Any])


def slide_detection_options(fn: F) -> F:
    """The working resolution, tiling and score options shared by ``detect`` and ``wsi``."""
    for option in reversed(
        [
            click.option(
                "--mpp", type=float, default=None, help="Working microns/pixel [detector's: 2.0]."
            ),
            click.option(
                "--level", type=int, default=None, help="Or work at this pyramid level as is."
            ),
            click.option(
                "--slide-mpp",
                type=float,
                default=None,
                help="The slides' own um/px, if unrecorded.",
            ),
            click.option(
                "--tile", type=int, default=None, help="Tile side in working pixels [1024]."
            ),
            click.option(
                "--overlap", type=int, default=None, help="Tile overlap in working pixels [256]."
            ),
            click.option(
                "--conf", type=float, default=None, help="Score threshold [the detector's]."
            ),
            click.option(
                "--nms-iou", type=float, default=None, help="Circle IoU merging seams [0.35]."
            ),
        ]
    ):
        fn = option(fn)
    return fn


def report_slides(
    command: str, summary: dict[str, Any] | None, as_json: bool, quiet: bool, files: str = ""
) -> None:
    """The one summary line (or ``--json``) of a slide run of ``detect`` or ``wsi``."""
    if summary is None:  # --dry-run
        return
    if as_json:
        echo_json(summary)
    elif not quiet:
        skipped = len(summary["skipped"])
        click.echo(
            f"{command}: {summary['done']} slide(s) done"
            + (f", {skipped} skipped (see run_summary.json)" if skipped else "")
            + f", {summary['glomeruli']} glomeruli; results in {summary['out']}/<slide>/"
            + (f" ({files})" if files else "")
        )


@click.group("detect", cls=CommandGroup, invoke_without_command=True)
@click.option("--slide", multiple=True, type=click.Path(), help="Slide file or folder (repeat).")
@click.option("--out", default=None, type=click.Path(file_okay=False), help="Results folder.")
@click.option("--weights", default=None, help="Detector weights (.safetensors) [shipped].")
@slide_detection_options
@click.option("--batch", type=int, default=None, help="Tiles per forward pass [1].")
@click.option("--device", default=None, help="auto, cpu, cuda or cuda:N [auto].")
@click.option("--devices", type=int, default=None, help="Worker processes, one per device [1].")
@click.option("--shard", default=None, help="i/n: this node's share of the slides.")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
@click.option("--quiet", is_flag=True, help="No progress lines.")
@config_options
@click.pass_context
def detect(
    ctx: click.Context,
    slide: tuple[str, ...],
    as_json: bool,
    quiet: bool,
    config_file: str | None,
    set_: tuple[str, ...],
    dry_run: bool,
    **kw: object,
) -> None:
    """Detect glomeruli on whole-slide images (level-0 boxes and circles); train the detector.

    Tiles the tissue at a working resolution (glass skipped), detects, joins the pieces of a
    glomerulus cut by tile seams and merges duplicates by circle NMS, and writes OUT/SLIDE/: SLIDE.xml, SLIDE.geojson, glomeruli.csv,
    summary.json, overview.png. Resumable: rerun the same command after a crash.

    \b
    Examples:
      glomssl detect --slide kidney.svs --out detections
      glomssl detect data --crops glomeruli/labels.csv --out det_data --n 1200
      glomssl detect train --data det_data --out runs --epochs 30
    """
    if ctx.invoked_subcommand is not None:
        return
    from glomssl.detect.run import DetectConfig, run_detect

    overrides = drop_none(slide=list(slide) or None, quiet=quiet or None, **kw)
    summary = run_command(
        DetectConfig, config_file, overrides, run_detect, dry_run=dry_run, sets=set_
    )
    report_slides("detect", summary, as_json, quiet)


@detect.command("data")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Training-set folder.")
@click.option("--crops", default=None, help="Manifest (CSV/JSONL) of crops: image,mask[,slide].")
@click.option(
    "--fields", default=None, help="Manifest of large annotated fields: image,mask[,slide]."
)
@click.option("--fields-mpp", type=float, default=None, help="Microns/pixel of the fields.")
@click.option("--n", type=int, default=None, help="Mosaics to make from the crops [1000].")
@click.option("--val-fraction", type=float, default=None, help="Share of slides held out [0.15].")
@click.option("--size", type=int, default=None, help="Tile side in working pixels [384].")
@click.option("--mpp", type=float, default=None, help="Working microns/pixel [2.0].")
@click.option("--glom-um", default=None, help="MIN,MAX glomerulus diameter in microns [100,250].")
@click.option("--crop-mpp", type=float, default=None, help="Crops' microns/pixel, if known.")
@click.option("--per-tile", default=None, help="MIN,MAX glomeruli per mosaic [0,5].")
@click.option("--glass", type=float, default=None, help="Share of mosaics with glass [0.4].")
@click.option("--negatives", default=None, help="MIN,MAX distractor pastes per mosaic [1,4].")
@click.option("--poisson", type=float, default=None, help="Share of Poisson-blended pastes [0.7].")
@click.option("--seed", type=int, default=None, help="Random seed of the mosaics [0].")
@click.option("--split-seed", type=int, default=None, help="Seed of the held-out slides [0].")
@click.option("--quiet", is_flag=True, help="No progress lines.")
@config_options
def data(
    quiet: bool, config_file: str | None, set_: tuple[str, ...], dry_run: bool, **kw: object
) -> None:
    """Build detector training tiles: mosaics of glomerulus crops on their own tissue and glass, and
    tiles of large annotated fields; exact boxes from the masks; slides never on both sides.

    Example: glomssl detect data --crops glomeruli/labels.csv --out det_data --n 1200
    """
    from glomssl.detect.build import DetectDataConfig, run_data

    overrides = drop_none(quiet=quiet or None, **kw)
    s = run_command(DetectDataConfig, config_file, overrides, run_data, dry_run=dry_run, sets=set_)
    if s is None:
        return
    if not quiet:
        click.echo(
            f"detect data: {s.get('mosaics', {})} mosaics, {s.get('field_tiles', {})} field tiles, "
            f"{s['skipped']} unreadable; wrote {s['out']}"
        )


@detect.command("train")
@click.option("--data", required=True, type=click.Path(), help="Folder from `glomssl detect data`.")
@click.option("--out", default=None, type=click.Path(), help="Parent of run folders [runs].")
@click.option("--model", default=None, type=click.Path(), help="Layout .yaml [packaged].")
@click.option("--init", default=None, type=click.Path(), help="Start from these weights.")
@click.option("--epochs", type=int, default=None, help="Epochs [30].")
@click.option("--imgsz", type=int, default=None, help="Training image size [384].")
@click.option("--batch", type=int, default=None, help="Batch size [16].")
@click.option(
    "--lr0", type=float, default=None, help="Starting learning rate of AdamW [auto: 0.002]."
)
@click.option("--device", default=None, help="cpu, cuda or cuda:N [cpu].")
@click.option("--workers", type=int, default=None, help="Data-loading workers [2].")
@click.option("--seed", type=int, default=None, help="Random seed [0].")
@click.option("--patience", type=int, default=None, help="Early-stopping patience, epochs [100].")
@click.option("--quiet", is_flag=True, help="Less output.")
@config_options
def train(
    quiet: bool, config_file: str | None, set_: tuple[str, ...], dry_run: bool, **kw: object
) -> None:
    """Train the glomerulus detector from scratch (offline); the run folder gets
    glomerulus_detector.safetensors + .json (working mpp, score threshold chosen on validation).

    Example: glomssl detect train --data det_data --out runs --epochs 30
    """
    from glomssl.detect.train import DetectTrainConfig, train_glomerulus_detector

    overrides = drop_none(quiet=quiet or None, **kw)
    r = run_command(
        DetectTrainConfig,
        config_file,
        overrides,
        train_glomerulus_detector,
        dry_run=dry_run,
        sets=set_,
    )
    if r is not None:
        echo_json(r)
