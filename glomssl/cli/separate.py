"""``glomssl separate``: split compound figures into panels.

Each command checks its options, builds one dataclass config, calls one library function and prints a
short JSON summary. Heavy imports (ultralytics, torch) happen inside the library functions.
"""

from __future__ import annotations

import json
from typing import Any

import click

from glomssl.cli.common import build, config_options, set_keys
from glomssl.config import to_yaml


def _echo(summary: dict[str, Any]) -> None:
    click.echo(json.dumps(summary, indent=None, default=str))


@click.command("separate")
@click.option("--input", "input_", required=True, type=click.Path(), help="FOLDER or MANIFEST.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option(
    "--method",
    type=click.Choice(["auto", "guided", "hybrid", "yolo", "classic"]),
    default=None,
    help="auto (the measured best: guided today, see docs/separate.md), guided (classic + hairline "
    "cuts and splits the detector confirms; a panel with one letter kept whole), hybrid, yolo or classic "
    "(no model) [auto].",
)
@click.option("--weights", type=click.Path(), default=None, help="Detector weights [shipped].")
@click.option(
    "--conf",
    type=float,
    default=None,
    help="Detector confidence threshold [tuned for the weights].",
)
@click.option("--imgsz", type=int, default=None, help="Detector image size [from weights].")
@click.option(
    "--min-side",
    type=int,
    default=None,
    help="Drop panels smaller than this [24]; guided keeps narrower pictures down to 12 px "
    "when they look like pictures (docs/separate.md).",
)
@click.option(
    "--seams/--no-seams",
    default=None,
    help="Also cut every 1-px gutter and seam of touching photos, confirmed or not [off].",
)
@click.option("--preview", type=int, default=None, help="Write N PNGs with boxes drawn [0].")
@click.option("--device", default=None, help="cpu, auto, cuda, cuda:N or a CUDA index [cpu].")
@config_options
@click.option("--quiet", is_flag=True, help="No progress bar.")
def separate(
    input_: str,
    out: str,
    method: str | None,
    weights: str | None,
    conf: float | None,
    imgsz: int | None,
    min_side: int | None,
    seams: bool | None,
    preview: int | None,
    device: str | None,
    config_file: str | None,
    set_: tuple[str, ...],
    dry_run: bool,
    quiet: bool,
) -> None:
    """Split compound figures into panel crops with DIR/manifest.jsonl; resumable.

    Example: glomssl separate --input figures/ --out panels --preview 10
    """
    from glomssl.mining.separate import SeparateConfig, run_separate

    cfg = build(
        SeparateConfig,
        config_file,
        {
            "input": input_,
            "out": out,
            "method": method,
            "weights": weights,
            "conf": conf,
            "imgsz": imgsz,
            "min_side": min_side,
            "seams": seams,
            "preview": preview,
            "device": device,
            "quiet": quiet or None,
        },
        set_keys(click.get_current_context().command, SeparateConfig, set_),
    )
    if dry_run:
        click.echo(to_yaml(cfg), nl=False)
        return
    _echo(run_separate(cfg))
