"""The CLI shell: fast start-up, lazy commands, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import click
from click.testing import CliRunner

from glomssl import __version__
from glomssl.cli import COMMANDS, cli
from glomssl.errors import GlomsslError


def test_help_does_not_import_heavy_libraries() -> None:
    code = (
        "import sys; from glomssl.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "heavy = [m for m in ('torch', 'ultralytics', 'faiss', 'lightning') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in out.stdout
    assert "Commands" in out.stdout


def test_version_and_module_entry_point() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "glomssl", "--version"], capture_output=True, text=True, check=True
    )
    assert __version__ in out.stdout


def test_every_listed_command_loads() -> None:
    runner = CliRunner()
    listed = cli.list_commands(click.Context(cli))
    assert listed, "no commands available"
    for name in listed:
        res = runner.invoke(cli, [name, "--help"])
        assert res.exit_code == 0, (name, res.output)
        assert name in COMMANDS or name in cli.commands


def test_glomssl_error_becomes_one_line_exit_2() -> None:
    @click.command("boom")
    def boom() -> None:
        raise GlomsslError("input x.png is broken; replace it")

    cli.add_command(boom)
    try:
        res = CliRunner().invoke(cli, ["boom"])
    finally:
        cli.commands.pop("boom", None)
    assert res.exit_code == 2
    assert res.output.strip() == "Error: input x.png is broken; replace it"
    assert "Traceback" not in res.output


def test_unknown_command_fails_cleanly() -> None:
    res = CliRunner().invoke(cli, ["no-such-command"])
    assert res.exit_code == 2 and "No such command" in res.output
