"""``glomssl embed``: one vector per image from a pretrained encoder."""

from __future__ import annotations

from typing import Any

import click

from glomssl.cli.common import config_options, drop_none, run_command


def _parse_layers(text: str) -> list[int]:
    """``"3,4"`` -> ``[3, 4]``; anything else is an error that names ``--layers``."""
    from glomssl.errors import GlomsslError

    parts = [t.strip() for t in text.split(",") if t.strip()]
    if not parts or any(t not in ("1", "2", "3", "4") for t in parts):
        raise GlomsslError(
            f"--layers {text!r} must be encoder stages among 1,2,3,4, comma-separated, e.g. 3,4"
        )
    return [int(t) for t in parts]


@click.command("embed")
@click.option("--checkpoint", required=True, help="Run folder or backbone.safetensors.")
@click.option("--input", "input_", required=True, help="FOLDER or MANIFEST of images.")
@click.option("--out", required=True, help="Output .npz (paths, embeddings).")
@click.option("--image-size", type=int, default=None, help="Resize to N x N [from backbone.json].")
@click.option("--batch-size", type=int, default=None, help="Images per forward pass [64].")
@click.option("--workers", type=int, default=None, help="Data-loading processes [2].")
@click.option("--device", type=str, default=None, help="auto | cpu | cuda [auto].")
@click.option("--layers", type=str, default=None, help="Stages pooled, e.g. 3,4 [4].")
@click.option(
    "--faiss-index", type=str, default=None, help="Also write a faiss inner-product index."
)
@click.option("--quiet", is_flag=True)
@config_options
def embed(
    input_: str,
    layers: str | None,
    quiet: bool,
    config_file: str | None,
    set_: tuple[str, ...],
    dry_run: bool,
    **kw: Any,
) -> None:
    """Embed images with a pretrained encoder into an .npz (input order).

    Example: glomssl embed --checkpoint runs/ssl1 --input crops/ --out crops.npz
    """
    from glomssl.ssl.embed import EmbedConfig, run_embed

    over = drop_none(**kw)
    over["input"] = input_
    over["quiet"] = quiet
    if layers:
        over["layers"] = _parse_layers(layers)
    res = run_command(EmbedConfig, config_file, over, run_embed, dry_run=dry_run, sets=set_)
    if res is None:
        return
    click.echo(
        f"embedded {res['n']} images ({res['dim']}-d, {res['image_size']} px) -> {res['out']}"
    )
    if res["skipped"]:
        click.echo(f"skipped {len(res['skipped'])} unreadable images, e.g. {res['skipped'][0]}")
