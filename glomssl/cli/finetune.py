"""``glomssl finetune``: a group whose sub-commands live in their own modules, loaded on demand.

``finetune seg`` (:mod:`glomssl.cli.finetune_seg`) trains the segmenters, ``finetune cls``
(:mod:`glomssl.cli.finetune_cls`) the glomerulosclerosis classifier. A sub-command whose module is
absent is simply not listed.
"""

from __future__ import annotations

import importlib
import importlib.util

import click

from glomssl.cli import CommandGroup

#: sub-command -> (module, attribute, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "seg": ("glomssl.cli.finetune_seg", "seg", "Segmenter on partially labelled masks."),
    "cls": ("glomssl.cli.finetune_cls", "cls", "Few-label glomerulosclerosis classifier."),
}


class FinetuneGroup(CommandGroup):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [n for n, (m, _a, _h) in SUBCOMMANDS.items() if importlib.util.find_spec(m)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in SUBCOMMANDS:
            return None
        module, attr, _help = SUBCOMMANDS[cmd_name]
        if importlib.util.find_spec(module) is None:
            return None
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command)
        return command


@click.group("finetune", cls=FinetuneGroup)
def finetune() -> None:
    """Fine-tune models for pathologists: segmenters (seg) and classifiers (cls).

    \b
    glomssl finetune seg --train masks.jsonl --out runs/seg
    glomssl finetune cls --data labels.csv --out runs/cls --backbone runs/ssl
    """
