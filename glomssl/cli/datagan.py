"""``glomssl datagan``: the label factory's command line (sample, project, train-labeler, generate).

Each command checks its options, builds one dataclass config (defaults <- ``--config`` YAML <-
``--set`` items <- options), calls one library function and prints a one-line summary. Torch is
imported only when a command runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from glomssl.cli import CommandGroup
from glomssl.cli.common import drop_none
from glomssl.cli.gan import run_with_sets, set_config_options


def _widths(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--hidden 128,32``: positive integers, comma-separated (checked here so the error names
    --hidden, not the config key)."""
    if value is None:
        return None
    parts = [v.strip() for v in value.split(",") if v.strip()]
    if not parts or not all(v.isdigit() and int(v) >= 1 for v in parts):
        raise click.BadParameter(
            f"{value!r} must list positive layer widths, comma-separated, e.g. 128,32"
        )
    return ",".join(parts)


def _run(
    cls: type,
    fn: Callable[[Any], dict[str, Any]],
    config_file: str | None,
    sets: tuple[str, ...],
    dry_run: bool,
    opts: dict[str, Any],
) -> None:
    """Build the config (defaults <- --config <- --set <- options); print it with --dry-run, else
    run ``fn`` and print its summary as one JSON line."""
    result = run_with_sets(cls, config_file, sets, drop_none(**opts), fn, dry_run)
    if result is not None:
        click.echo(json.dumps(result, default=str))


@click.group("datagan", cls=CommandGroup)
def datagan() -> None:
    """Label factory (datasetGAN): annotate a few generated images, generate thousands of pairs.

    \b
    1. glomssl datagan sample --network RUN --n 24 --out ANN/
    2. paint ANN/X_mask.png for some ANN/X.png (pixel value = class id, 255 = unlabelled)
       (or: glomssl datagan project --network RUN --images REAL/ --masks MASKS/ --out ANN/)
    3. glomssl datagan train-labeler --network RUN --annotations ANN/ --num-classes 3 --out LAB/
    4. glomssl datagan generate --network RUN --labeler LAB/ --n 50000 --out SYN/

    Each command also takes --config FILE (YAML), --set KEY=VALUE (an option by name, e.g.
    --set k=5) and --dry-run; options typed win over --set, --set over --config.
    """


@datagan.command("sample")
@click.option("--network", required=True, help="`gan train` run folder or snapshot file.")
@click.option("--out", required=True, help="Annotation folder to write X.png + X.npz into.")
@click.option("--n", type=int, default=None, help="Images to sample [24].")
@click.option("--seed", type=int, default=None, help="First seed [0].")
@click.option("--trunc", type=float, default=None, help="Truncation psi [0.7].")
@click.option("--mem-budget-mb", type=int, default=None, help="Memory for images in flight [1024].")
@click.option("--device", default=None, help="cpu or cuda:0 [cpu].")
@set_config_options
def sample_cmd(config_file: str | None, set_: tuple[str, ...], dry_run: bool, **opts: Any) -> None:
    """Write generated images and their latents, ready to annotate.

    Example: glomssl datagan sample --network runs/00003-gan --n 24 --out ann/
    """
    from glomssl.datagan.factory import SampleConfig, run_datagan_sample

    _run(SampleConfig, run_datagan_sample, config_file, set_, dry_run, opts)


@datagan.command("project")
@click.option("--network", required=True, help="`gan train` run folder or snapshot file.")
@click.option("--images", required=True, help="Folder of real images to project.")
@click.option("--masks", default=None, help="Folder of their masks (X.png or X_mask.png).")
@click.option(
    "--mask-threshold",
    type=int,
    default=None,
    help="Black/white (0-255) masks: foreground above this grey level [127].",
)
@click.option("--out", required=True, help="Annotation folder to write into.")
@click.option("--steps", type=int, default=None, help="Optimisation steps per image [300].")
@click.option("--lr", type=float, default=None, help="Adam learning rate [0.05].")
@click.option("--encoder", default=None, help="glomssl pretrain run: perceptual term.")
@click.option("--optimize-noise/--no-optimize-noise", default=None, help="Also fit noise [on].")
@click.option("--seed", type=int, default=None, help="Random seed [0].")
@click.option("--device", default=None, help="cpu or cuda:0 [cpu].")
@click.option("--quiet", is_flag=True, default=None, help="No progress bar.")
@set_config_options
def project_cmd(config_file: str | None, set_: tuple[str, ...], dry_run: bool, **opts: Any) -> None:
    """Project real annotated images into W+ so their masks can train the labeler.

    Example: glomssl datagan project --network runs/00003-gan --images real/ --masks real_masks/
    --out ann/
    """
    from glomssl.datagan.project import ProjectConfig, run_datagan_project

    _run(ProjectConfig, run_datagan_project, config_file, set_, dry_run, opts)


@datagan.command("train-labeler")
@click.option("--network", required=True, help="`gan train` run folder or snapshot file.")
@click.option("--annotations", required=True, help="Annotation folder (X.png, X.npz, X_mask.png).")
@click.option("--num-classes", type=int, required=True, help="Classes, ids 0..C-1 in the masks.")
@click.option("--out", required=True, help="Folder for labeler.safetensors + labeler.json.")
@click.option("--k", type=int, default=None, help="Ensemble size [10].")
@click.option(
    "--hidden", default=None, callback=_widths, help="Hidden widths, comma-separated [128,32]."
)
@click.option("--rounds", type=int, default=None, help="Rounds of fresh pixel samples [4].")
@click.option("--pool-mb", type=int, default=None, help="Pixel-feature pool cap in MiB [1024].")
@click.option("--max-pixels-per-image", type=int, default=None, help="Per image per round [20000].")
@click.option("--epochs", type=int, default=None, help="Passes over each round's pool [2].")
@click.option("--batch-size", type=int, default=None, help="Pixels per step [256].")
@click.option("--lr", type=float, default=None, help="Adam learning rate [1e-3].")
@click.option("--seed", type=int, default=None, help="Random seed [0].")
@click.option("--device", default=None, help="cpu or cuda:0 [cpu].")
@click.option("--quiet", is_flag=True, default=None, help="No progress bar.")
@set_config_options
def train_labeler_cmd(
    config_file: str | None, set_: tuple[str, ...], dry_run: bool, **opts: Any
) -> None:
    """Train the pixel-classifier ensemble on an annotation folder.

    Example: glomssl datagan train-labeler --network runs/00003-gan --annotations ann/
    --num-classes 3 --out labeler/
    """
    from glomssl.datagan.labeler import LabelerConfig, train_labeler

    _run(LabelerConfig, train_labeler, config_file, set_, dry_run, opts)


@datagan.command("generate")
@click.option("--network", required=True, help="`gan train` run folder or snapshot file.")
@click.option("--labeler", required=True, help="`datagan train-labeler` output folder.")
@click.option("--out", required=True, help="Output folder (resumable).")
@click.option("--n", type=int, default=None, help="Pairs to keep [1000].")
@click.option("--drop-uncertain", type=float, default=None, help="Fraction to drop [0].")
@click.option("--seed", type=int, default=None, help="First seed [0].")
@click.option("--trunc", type=float, default=None, help="Truncation psi [0.7].")
@click.option("--shard", default=None, help="This shard i/N (default: RANK/WORLD_SIZE or 0/1).")
@click.option("--band-mb", type=int, default=None, help="Feature band budget in MiB [256].")
@click.option("--mem-budget-mb", type=int, default=None, help="Memory for images in flight [1024].")
@click.option("--device", default=None, help="auto, cpu or cuda:N [auto].")
@click.option("--quiet", is_flag=True, default=None, help="No progress bar.")
@set_config_options
def generate_cmd(
    config_file: str | None, set_: tuple[str, ...], dry_run: bool, **opts: Any
) -> None:
    """Generate labelled image/mask pairs at full resolution with bounded memory.

    Example: glomssl datagan generate --network runs/00003-gan --labeler labeler/ --n 50000
    --drop-uncertain 0.1 --out syn/
    """
    from glomssl.datagan.factory import GenerateConfig, run_datagan_generate

    _run(GenerateConfig, run_datagan_generate, config_file, set_, dry_run, opts)
