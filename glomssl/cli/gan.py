"""``glomssl gan``: train an in-house StyleGAN2-ADA, generate images with it, score it (FID/KID).

Thin commands: check options -> build one dataclass config (defaults <- ``--config`` YAML <-
``--set`` items <- options) -> call one library function -> print a one-line JSON summary. Torch and
Lightning load only when a command runs, so ``glomssl --help`` stays fast.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

from glomssl.cli import CommandGroup
from glomssl.cli.common import config_options, drop_none, run_command, set_keys

F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C")


def set_config_options(fn: F) -> F:
    """``--config FILE``, ``--set KEY=VALUE`` (repeatable) and ``--dry-run`` of the ``gan`` and
    ``datagan`` commands: their configs are flat, and ``--set`` takes the option names of ``--help``
    (see :func:`run_with_sets`)."""
    return config_options(
        fn,
        set_help="Set one option by its name, e.g. lr=0.001, or a config key --dry-run prints; "
        "repeatable. Options typed win over --set, --set over --config.",
    )


def run_with_sets(
    config_cls: type[C],
    config_file: str | None,
    sets: tuple[str, ...],
    overrides: dict[str, Any],
    fn: Callable[[C], Any],
    dry_run: bool,
) -> Any:
    """:func:`glomssl.cli.common.run_command` (defaults <- ``--config`` <- ``--set`` <- options;
    with ``dry_run`` print the config and return None) after the ``--set`` items were checked
    against the running command's options: an option name (dashes or underscores) or config key,
    and a value of the option's type and range, else a one-line error before any work."""
    keys = set_keys(click.get_current_context().command, config_cls, sets)
    return run_command(config_cls, config_file, overrides, fn, dry_run=dry_run, sets=keys)


CFG_CHOICES = ["auto", "small", "paper256", "paper512", "paper1024"]


@click.group("gan", cls=CommandGroup)
def gan() -> None:
    """StyleGAN2-ADA for histology patches: train, generate, score.

    \b
    glomssl gan train --data patches/ --out runs/gan256 --resolution 256
    glomssl gan generate --network runs/gan256 --seeds 0-99 --trunc 0.7 --out fakes/
    glomssl gan metrics --network runs/gan256 --data patches/ --metric-inception inception_v3.pth

    Each command also takes --config FILE (YAML), --set KEY=VALUE (an option by name, e.g.
    --set lr=0.001) and --dry-run; options typed win over --set, --set over --config.
    """


@gan.command("train")
@click.option(
    "--data",
    multiple=True,
    required=True,
    help="Image folder, manifest (.jsonl) or whole-slide files; repeat for several.",
)
@click.option("--out", required=True, help="Run folder (created; snapshots, metrics, grids).")
@click.option("--resolution", type=int, default=None, help="Image size, 32..1024 [256].")
@click.option(
    "--networks",
    "--cfg",
    "networks",
    type=click.Choice(CFG_CHOICES),
    default=None,
    help="Network widths (--cfg is an old name) [auto].",
)
@click.option("--channel-max", type=int, default=None, help="Cap on feature maps per layer.")
@click.option("--batch-size", type=int, default=None, help="Total batch over all devices [32].")
@click.option("--kimg", type=float, default=None, help="Train for this many k real images [5000].")
@click.option(
    "--max-minutes", type=float, default=None, help="Stop (with a snapshot) after this wall time."
)
@click.option("--gamma", type=float, default=None, help="R1 weight [0.0002*res^2/batch].")
@click.option("--mirror", is_flag=True, default=None, help="Random x-flips of training images.")
@click.option("--aug", type=click.Choice(["ada", "noaug", "fixed"]), default=None, help="[ada]")
@click.option("--aug-p", type=float, default=None, help="Augment probability for --aug fixed.")
@click.option("--target", type=float, default=None, help="ADA target for E[sign(D(real))] [0.6].")
@click.option("--pl-weight", type=float, default=None, help="Path-length reg. weight [2; 0 small].")
@click.option("--lr", type=float, default=None, help="Adam learning rate [0.0025].")
@click.option("--snap", type=float, default=None, help="kimg between snapshots [50].")
@click.option("--tick", type=float, default=None, help="kimg between metrics lines [4].")
@click.option("--seed", type=int, default=None, help="Random seed [0].")
@click.option("--workers", type=int, default=None, help="Data loader workers per process [2].")
@click.option("--accelerator", default=None, help="auto, cpu or gpu (cuda) [auto].")
@click.option("--devices", type=int, default=None, help="Devices per node [1].")
@click.option("--num-nodes", type=int, default=None, help="Nodes [1].")
@click.option("--strategy", default=None, help="auto, ddp, ddp_spawn or ddp_fork [auto].")
@click.option("--precision", default=None, help="auto, 32-true, bf16-mixed, 16-mixed [auto].")
@click.option("--resume", is_flag=True, default=None, help="Continue from the latest snapshot.")
@click.option("--slide-level", type=int, default=None, help="Pyramid level for slide patches [0].")
@click.option("--slide-mpp", type=float, default=None, help="Microns/pixel for slide patches.")
@click.option("--metric-encoder", default=None, help="`glomssl pretrain` run for FID/KID.")
@click.option(
    "--metric-inception",
    default=None,
    help="Local Inception-v3 weights (torchvision state dict) for standard FID/KID.",
)
@click.option("--metric-num", type=int, default=None, help="Images per FID/KID [1000].")
@set_config_options
@click.option("--quiet", is_flag=True, default=None, help="No progress bar.")
def train_cmd(
    data: tuple[str, ...],
    config_file: str | None,
    set_: tuple[str, ...],
    dry_run: bool,
    **opts: Any,
) -> None:
    """Train StyleGAN2-ADA on FOLDER | MANIFEST | SLIDE... into a run folder.

    `--kimg 0` writes the initialised networks as a snapshot and exits; `--resume` continues the
    run folder's latest snapshot. `--set` also reaches the config keys without an option
    (ema_kimg, style_mixing, grid, ...); RUN/config.yaml records the merged config.

    \b
    Example:
      glomssl gan train --data patches/ --out runs/gan256 --resolution 256 --mirror
      glomssl gan train --data patches/ --out runs/gan256 --set lr=0.001 --dry-run
    """
    from glomssl.datagan.train import GanTrainConfig, run_gan_train

    overrides = drop_none(**opts)
    overrides["data"] = list(data)
    result = run_with_sets(GanTrainConfig, config_file, set_, overrides, run_gan_train, dry_run)
    if result is None:  # --dry-run (the config is printed), or a DDP rank other than zero
        return
    from glomssl.runs import is_rank_zero

    if is_rank_zero():
        click.echo(json.dumps(result))


@gan.command("generate")
@click.option("--network", required=True, help="`gan train` run folder or snapshot file.")
@click.option("--seeds", default=None, help='Seeds: "0-99", "1,5,7" [0-99].')
@click.option("--trunc", type=float, default=None, help="Truncation psi, 1 = none [1.0].")
@click.option("--out", required=True, help="Folder for seedNNNN.png and manifest.jsonl.")
@click.option(
    "--noise-mode", type=click.Choice(["const", "random", "none"]), default=None, help="[const]"
)
@click.option(
    "--batch-size", type=int, default=None, help="Images per forward pass [as fit the budget]."
)
@click.option(
    "--mem-budget-mb", type=int, default=None, help="Memory for images in flight, MiB [1024]."
)
@click.option("--device", default=None, help="auto, cpu or cuda [auto].")
@set_config_options
@click.option("--quiet", is_flag=True, default=None, help="No progress bar.")
def generate_cmd(
    config_file: str | None, set_: tuple[str, ...], dry_run: bool, **opts: Any
) -> None:
    """Generate one PNG per seed from a trained generator (G_ema), plus a manifest.

    \b
    Example:
      glomssl gan generate --network runs/gan256 --seeds 0-99 --trunc 0.7 --out fakes/
    """
    from glomssl.datagan.generate import GenerateConfig, run_generate

    over = drop_none(**opts)
    result = run_with_sets(GenerateConfig, config_file, set_, over, run_generate, dry_run)
    if result is not None:
        click.echo(json.dumps(result))


@gan.command("metrics")
@click.option("--network", required=True, help="`gan train` run folder or snapshot file.")
@click.option(
    "--data", multiple=True, required=True, help="Real images: folder or manifest; repeatable."
)
@click.option("--metric-encoder", default=None, help="`glomssl pretrain` run for FID/KID.")
@click.option(
    "--metric-inception",
    default=None,
    help="Local Inception-v3 weights (torchvision state dict) for standard FID/KID.",
)
@click.option("--num", type=int, default=None, help="Real and fake images [1000].")
@click.option("--device", default=None, help="auto, cpu or cuda [auto].")
@click.option("--out", default=None, help="Also write the result to this JSON file.")
@set_config_options
def metrics_cmd(
    data: tuple[str, ...], config_file: str | None, set_: tuple[str, ...], dry_run: bool, **kw: Any
) -> None:
    """FID/KID of a snapshot's G_ema against real images, in each feature space given.

    Prints one JSON line: fid_enc/kid_enc (--metric-encoder) and fid_inception/kid_inception
    (--metric-inception), as `gan train` logs them.

    \b
    Example:
    glomssl gan metrics --network runs/gan256 --data patches/ --metric-inception inc.pth
    """
    from glomssl.datagan.metrics import GanMetricsConfig, run_gan_metrics_config

    over = drop_none(**kw)
    over["data"] = list(data)
    result = run_with_sets(
        GanMetricsConfig, config_file, set_, over, run_gan_metrics_config, dry_run
    )
    if result is not None:
        click.echo(json.dumps(result))
