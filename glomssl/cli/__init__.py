"""The ``glomssl`` command line.

Each top-level command lives in its own module, ``glomssl/cli/<command>.py``, loaded lazily, so
``glomssl --help`` imports neither torch nor ultralytics. Library packages never import click. Every command follows one pattern:
check options -> build a config -> call one library function -> print the result. Bad input raises
:class:`glomssl.errors.GlomsslError`, shown here as a single line with a non-zero exit.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any

import click

from glomssl import __version__
from glomssl.errors import GlomsslError

# name -> (module, attribute, one-line help shown by `glomssl --help` without importing the module)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "mine": ("glomssl.cli.mine", "mine", "Mine Open-i figures into a curated corpus."),
    "replay": ("glomssl.cli.replay", "replay", "Serve an offline Open-i replay on 127.0.0.1."),
    "separator": (
        "glomssl.cli.separator",
        "separator",
        "Make synthetic compound figures and train the panel detector.",
    ),
    "separate": (
        "glomssl.cli.separate",
        "separate",
        "Split compound figures into panels (classic, guided, hybrid or YOLO).",
    ),
    "curate": (
        "glomssl.cli.curate",
        "curate",
        "Keep light-microscopy tissue panels; train the scorer.",
    ),
    "dedup": (
        "glomssl.cli.dedup",
        "dedup",
        "Drop exact, perceptual and embedding near-duplicates.",
    ),
    "pretrain": (
        "glomssl.cli.pretrain",
        "pretrain",
        "Self-supervised pretraining (VICReg by default, SimSiam, region contrast).",
    ),
    "embed": ("glomssl.cli.embed", "embed", "Embed images with a pretrained encoder."),
    "probe": ("glomssl.cli.probe", "probe", "Linear and kNN probes of embeddings."),
    "gan": ("glomssl.cli.gan", "gan", "Train StyleGAN2-ADA and generate images."),
    "datagan": (
        "glomssl.cli.datagan",
        "datagan",
        "Label factory: annotate a few samples, generate labelled pairs.",
    ),
    "finetune": (
        "glomssl.cli.finetune",
        "finetune",
        "Train a segmenter (seg) or a glomerulosclerosis classifier (cls).",
    ),
    "segment": ("glomssl.cli.segment", "segment", "Segment images or whole slides."),
    "classify": ("glomssl.cli.classify", "classify", "Classify glomerulus crops."),
    "detect": ("glomssl.cli.detect", "detect", "Detect glomeruli on slides; train the detector."),
    "wsi": ("glomssl.cli.wsi", "wsi", "Whole slide -> glomeruli table, ImageScope XML, GeoJSON."),
}


class UserError(click.ClickException):
    """A GlomsslError shown the click way: ``Error: <message>`` and a non-zero exit code."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]


class CommandGroup(click.Group):
    """A click group that turns GlomsslError into a one-line ``Error: ...`` and its exit code.

    Sub-command groups (``gan``, ``datagan`` ...) use it too, so they behave the same when invoked on
    their own (e.g. through click's CliRunner) as under ``glomssl``.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GlomsslError as exc:
            raise UserError(str(exc), exc.exit_code) from None

    def main(  # type: ignore[override]
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """As click's, but a usage error (bad option value, missing option) prints ONE line.

        Click prints a usage block, a hint and the error on three lines; glomssl prints
        ``Error: <what is wrong> (see: glomssl CMD --help)`` and exits with code 2.
        """
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else (prog_name or "glomssl")
            click.echo(f"Error: {exc.format_message()} (see: {where} --help)", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


class GlomsslGroup(CommandGroup):
    """The top-level group: loads commands on demand (so start-up stays fast)."""

    def _available(self) -> list[str]:
        names = []
        for name, (module, _attr, _help) in COMMANDS.items():
            try:
                if importlib.util.find_spec(module) is not None:
                    names.append(name)
            except ModuleNotFoundError:
                continue
        return names

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._available()))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None or cmd_name not in COMMANDS:
            return cmd
        module, attr, _help = COMMANDS[cmd_name]
        if importlib.util.find_spec(module) is None:
            return None
        mod = importlib.import_module(module)
        command = getattr(mod, attr)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self._available()]
        rows += [
            (name, (self.commands[name].get_short_help_str(60)))
            for name in super().list_commands(ctx)
            if name not in COMMANDS
        ]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(sorted(rows))


@click.group(cls=GlomsslGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="glomssl")
def cli() -> None:
    """glomssl: turn the open web and a few annotations into trained glomerular models.

    Run `glomssl COMMAND --help` for each command's options and an example.
    """


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    from glomssl.engine.orphans import (
        close_process_group,
        exit_with_launcher,
        rendezvous_port_error,
    )

    exit_with_launcher()  # a DDP rank Lightning relaunched stops when rank 0 is gone
    try:
        cli.main(args=argv, prog_name="glomssl", standalone_mode=True)
    except SystemExit as done:
        if done.code in (0, None):  # success: close a DDP group before the interpreter's exit
            close_process_group()
        raise
    except KeyboardInterrupt:  # pragma: no cover - interactive
        click.echo("interrupted; run the same command again to resume", err=True)
        sys.exit(130)
    except Exception as exc:  # a taken DDP port is bad input, not a crash: one line, exit 2
        message = rendezvous_port_error(exc)
        if message is None:
            raise
        click.echo(f"Error: {message}", err=True)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
