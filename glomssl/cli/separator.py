"""``glomssl separator synth|train``: synthetic compound figures and the panel detector's training."""

from __future__ import annotations

import json
from typing import Any

import click

from glomssl.cli import CommandGroup
from glomssl.cli.common import build, config_options, set_keys
from glomssl.config import to_yaml


def _echo(summary: dict[str, Any]) -> None:
    click.echo(json.dumps(summary, indent=None, default=str))


@click.group("separator", cls=CommandGroup)
def separator() -> None:
    """Make synthetic compound figures and train the panel detector.

    \b
    glomssl separator synth --out synth --n 2000 --images my_micrographs/
    glomssl separator train --data synth/data.yaml --out runs --epochs 15
    """


@separator.command("synth")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--n", type=int, default=None, help="Number of figures [1000].")
@click.option("--images", multiple=True, type=click.Path(), help="Folder of panel images (repeat).")
@click.option("--seed", type=int, default=None, help="Random seed [0].")
@click.option("--val-fraction", type=float, default=None, help="Share held out as val [0.1].")
@click.option("--long-side", type=int, default=None, help="Typical long side in px [512].")
@click.option("--no-letters", is_flag=True, help="Draw no panel letters.")
@click.option("--no-captions", is_flag=True, help="Draw no caption bands.")
@click.option(
    "--same-source",
    type=float,
    default=None,
    help="Share of figures that are montages of one --images picture [0].",
)
@click.option(
    "--touch",
    type=float,
    default=None,
    help="Share of figures that are montages of --images pictures with no gutter [0].",
)
@config_options
@click.option("--quiet", is_flag=True, help="No progress bar.")
def synth(
    out: str,
    n: int | None,
    images: tuple[str, ...],
    seed: int | None,
    val_fraction: float | None,
    long_side: int | None,
    no_letters: bool,
    no_captions: bool,
    same_source: float | None,
    touch: float | None,
    config_file: str | None,
    set_: tuple[str, ...],
    dry_run: bool,
    quiet: bool,
) -> None:
    """Write a YOLO data set of synthetic compound figures with exact panel boxes.

    Example: glomssl separator synth --out synth --n 2000 --images micrographs/ --seed 0
    """
    from glomssl.mining.synth import SynthConfig, run_synth

    cfg = build(
        SynthConfig,
        config_file,
        {
            "out": out,
            "n": n,
            "images": list(images) or None,
            "seed": seed,
            "val_fraction": val_fraction,
            "long_side": long_side,
            "letters": False if no_letters else None,
            "captions": False if no_captions else None,
            "same_source": same_source,
            "touch": touch,
            "quiet": quiet or None,
        },
        set_keys(click.get_current_context().command, SynthConfig, set_),
    )
    if dry_run:
        click.echo(to_yaml(cfg), nl=False)
        return
    from tqdm import tqdm

    bars: list[Any] = []  # opened at the first figure: a refused run prints its error line only

    def step(k: int) -> None:
        if not bars:
            bars.append(tqdm(total=cfg.n, disable=cfg.quiet, unit="fig", desc="synth"))
        bars[0].update(k)

    try:
        summary = run_synth(cfg, progress=step)
    finally:
        for bar in bars:
            bar.close()
    _echo(summary)


@separator.command("train")
@click.option("--data", required=True, type=click.Path(), help="data.yaml from `separator synth`.")
@click.option("--out", default=None, type=click.Path(), help="Parent of run folders [runs].")
@click.option("--model", default=None, type=click.Path(), help="Model .yaml [packaged].")
@click.option("--epochs", type=int, default=None, help="Epochs [15].")
@click.option("--imgsz", type=int, default=None, help="Training image size [512].")
@click.option("--batch", type=int, default=None, help="Batch size [16].")
@click.option("--device", default=None, help="cpu, 0, 0,1 ... [cpu].")
@click.option("--workers", type=int, default=None, help="Data-loading workers [2].")
@click.option("--seed", type=int, default=None, help="Random seed [0].")
@click.option("--fraction", type=float, default=None, help="Share of training images used [1].")
@click.option("--init", type=click.Path(), default=None, help="Start from these weights.")
@click.option(
    "--lr0", type=float, default=None, help="Starting learning rate of AdamW [auto: 0.002]."
)
@config_options
@click.option("--quiet", is_flag=True, help="Less output.")
def train(
    data: str,
    out: str | None,
    model: str | None,
    epochs: int | None,
    imgsz: int | None,
    batch: int | None,
    device: str | None,
    workers: int | None,
    seed: int | None,
    fraction: float | None,
    init: str | None,
    lr0: float | None,
    config_file: str | None,
    set_: tuple[str, ...],
    dry_run: bool,
    quiet: bool,
) -> None:
    """Train the panel detector from scratch (offline) into a numbered run folder.

    Example: glomssl separator train --data synth/data.yaml --epochs 15 --imgsz 416
    """
    from glomssl.mining.yolo_train import TrainConfig, train_detector

    cfg = build(
        TrainConfig,
        config_file,
        {
            "data": data,
            "out": out,
            "model": model,
            "epochs": epochs,
            "imgsz": imgsz,
            "batch": batch,
            "device": device,
            "workers": workers,
            "seed": seed,
            "fraction": fraction,
            "init": init,
            "lr0": lr0,
            "quiet": quiet or None,
        },
        set_keys(click.get_current_context().command, TrainConfig, set_),
    )
    if dry_run:
        click.echo(to_yaml(cfg), nl=False)
        return
    _echo(train_detector(cfg))
