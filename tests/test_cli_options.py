"""Every numeric option of every command, walked from the click objects themselves.

Each one gets NaN, inf, a negative value and 0. NaN, inf and negative values must be refused with exit
code 2 and ONE line naming the option; 0 may be accepted (``--seed 0``, ``--max-steps 0``) or refused
the same way. Never a traceback. Commands run with ``--dry-run``, so an accepted value only prints the
merged config: validation must happen before any work starts.
"""

from __future__ import annotations

from collections.abc import Iterator

import click
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from glomssl.cli import cli


def _walk(cmd: click.Command, path: list[str]) -> Iterator[tuple[list[str], click.Command]]:
    ctx = click.Context(cli)
    if isinstance(cmd, click.Group):
        if any(isinstance(p, click.Option) and p.name == "dry_run" for p in cmd.params):
            yield path, cmd  # a group that runs on its own (curate)
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            assert sub is not None
            yield from _walk(sub, [*path, name])
    else:
        yield path, cmd


def all_commands() -> list[tuple[list[str], click.Command]]:
    ctx = click.Context(cli)
    out = []
    for name in cli.list_commands(ctx):
        cmd = cli.get_command(ctx, name)
        assert cmd is not None
        out.extend(_walk(cmd, [name]))
    return out


def numeric_options(cmd: click.Command) -> list[click.Option]:
    return [
        p
        for p in cmd.params
        if isinstance(p, click.Option)
        and isinstance(p.type, click.types.IntParamType | click.types.FloatParamType)
    ]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Real files for the required options: an image folder, a CSV, an npz, a data.yaml."""
    d = tmp_path_factory.mktemp("cli-options")
    imgs = d / "images"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(imgs / f"{i}.png")
    (d / "labels.csv").write_text("image,label,slide\n0.png,a,s0\n1.png,b,s1\n2.png,a,s2\n")
    np.savez(d / "emb.npz", paths=np.array(["0.png", "1.png", "2.png"]), embeddings=np.eye(3))
    (d / "data.yaml").write_text(f"path: {d}\ntrain: images\nval: images\nnames: {{0: panel}}\n")
    return {
        "folder": str(imgs),
        "csv": str(d / "labels.csv"),
        "npz": str(d / "emb.npz"),
        "yaml": str(d / "data.yaml"),
        "out": str(d / "out"),
        "file": str(imgs / "0.png"),
    }


#: required options -> which kind of input to give them
REQUIRED = {
    "--input": "folder",
    "--out": "out",
    "--data": "folder",
    "--network": "folder",
    "--labeler": "folder",
    "--images": "folder",
    "--annotations": "folder",
    "--positives": "folder",
    "--negatives": "folder",
    "--checkpoint": "folder",
    "--embeddings": "npz",
    "--labels": "csv",
    "--query": None,
    "--num-classes": None,
    "--model": "folder",
    "--train": "folder",
    "--slide": "file",
}
SPECIAL = {"--query": "kidney", "--num-classes": "2"}


def base_args(path: list[str], cmd: click.Command, inputs: dict[str, str]) -> list[str]:
    args: list[str] = []
    for p in cmd.params:
        if not p.required:
            continue
        if isinstance(p, click.Argument):
            args.append(inputs["file"])
            continue
        flag = p.opts[0]
        if flag == "--data" and path[:2] == ["separator", "train"]:
            args += [flag, inputs["yaml"]]
        elif flag in SPECIAL:
            args += [flag, SPECIAL[flag]]
        else:
            kind = REQUIRED.get(flag)
            assert kind is not None, f"{' '.join(path)}: no test input for required {flag}"
            args += [flag, inputs[kind]]
    if path == ["curate"]:
        args += ["--input", inputs["folder"], "--out", inputs["out"]]
    assert any(isinstance(p, click.Option) and p.name == "dry_run" for p in cmd.params), (
        f"glomssl {' '.join(path)} has no --dry-run: options cannot be checked before work starts"
    )
    return [*args, "--dry-run"]


CASES = [
    (path, opt.opts[0])
    for path, cmd in all_commands()
    for opt in numeric_options(cmd)
    if not (isinstance(opt.type, click.types.IntParamType) and False)
]


def test_every_command_is_walked() -> None:
    walked = {" ".join(p) for p, _ in all_commands()}
    for name in ("pretrain", "gan train", "datagan generate", "mine", "separate", "replay"):
        assert name in walked
    assert len(CASES) > 60


@pytest.mark.parametrize(("path", "flag"), CASES, ids=[f"{' '.join(p)} {f}" for p, f in CASES])
def test_numeric_option_values(path: list[str], flag: str, inputs: dict[str, str]) -> None:
    ctx = click.Context(cli)
    cmd: click.Command | None = cli
    for name in path:
        assert isinstance(cmd, click.Group)
        cmd = cmd.get_command(ctx, name)
    assert cmd is not None
    base = base_args(path, cmd, inputs)
    runner = CliRunner()
    for value in ("nan", "inf", "-1", "0"):
        res = runner.invoke(cli, [*path, *base[:-1], flag, value, base[-1]])
        where = f"glomssl {' '.join(path)} {flag} {value}"
        assert res.exception is None or isinstance(res.exception, SystemExit), (
            f"{where}: raised {res.exception!r}\n{res.output}"
        )
        assert "Traceback" not in res.output, where
        if value == "0" and res.exit_code == 0:
            continue
        assert res.exit_code == 2, f"{where}: exit {res.exit_code}\n{res.output}"
        lines = res.output.strip().splitlines()
        assert len(lines) == 1, f"{where}: {len(lines)} lines\n{res.output}"
        assert lines[0].startswith("Error:"), f"{where}: {lines[0]}"
        if value != "0":
            key = flag.lstrip("-").replace("-", "_")  # nested keys are named as section.key
            assert flag in lines[0] or key in lines[0], f"{where}: does not name {flag}: {lines[0]}"
