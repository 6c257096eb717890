"""``--set KEY=VALUE`` on ``glomssl gan train|generate|metrics`` and ``glomssl datagan ...``.

As on ``pretrain``: the merged config is defaults <- ``--config`` <- ``--set`` <- options typed;
``--set`` takes the option names of ``--help`` (dashes or underscores) and the config keys
``--dry-run`` prints; a bad key or value is one ``Error:`` line with exit code 2 and nothing written;
a run's ``config.yaml`` holds the ``--set`` values, and a ``--set`` that changes a resumed run is
refused exactly like the option that changes it.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner, Result
from PIL import Image

from glomssl.cli import cli

RES = 32


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Four small RGB images and a run folder holding one tiny "small" generator snapshot."""
    from glomssl.datagan.networks import create_discriminator, create_generator
    from glomssl.datagan.snapshot import save_snapshot

    root = tmp_path_factory.mktemp("gset")
    imgs = root / "imgs"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        a = np.full((40, 48, 3), 235, np.uint8)
        y, x = rng.integers(5, 30, 2)
        a[y : y + 10, x : x + 12] = (200, 80, 160)
        Image.fromarray(a).save(imgs / f"p{i}.png")
    net = root / "net"
    torch.manual_seed(0)
    G = create_generator("small", RES, channel_max=8)
    D = create_discriminator("small", RES, channel_max=8)
    save_snapshot(net / "snapshot-000000.safetensors", G, D, copy.deepcopy(G), 0.0, 0)
    return {"root": root, "imgs": imgs, "net": net}


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def _sets(*items: str) -> list[str]:
    return [a for item in items for a in ("--set", item)]


def _one_line_error(r: Result, *needles: str) -> str:
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), r.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _base(cmd: str, files: dict[str, Path], out: Path) -> list[str]:
    """The required options of each command (none of the inputs is read by --dry-run)."""
    net, imgs = str(files["net"]), str(files["imgs"])
    return {
        "gan train": ["gan", "train", "--data", imgs, "--out", str(out)],
        "gan generate": ["gan", "generate", "--network", net, "--out", str(out)],
        "gan metrics": ["gan", "metrics", "--network", net, "--data", imgs, "--out", str(out)],
        "datagan sample": ["datagan", "sample", "--network", net, "--out", str(out)],
        "datagan project": [
            *["datagan", "project", "--network", net, "--images", imgs, "--out", str(out)]
        ],
        "datagan train-labeler": [
            *["datagan", "train-labeler", "--network", net, "--annotations", imgs],
            *["--num-classes", "2", "--out", str(out)],
        ],
        "datagan generate": [
            *["datagan", "generate", "--network", net, "--labeler", net, "--out", str(out)]
        ],
    }[cmd]


# command, --set items (option names with dashes, underscores, config keys), expected config
CASES = [
    (
        "gan train",
        ["lr=0.001", "batch-size=8", "max_minutes=5", "ema_kimg=2", "cfg=small", "mirror=true"],
        {
            "lr": 0.001,
            "batch_size": 8,
            "max_minutes": 5.0,
            "ema_kimg": 2.0,
            "networks": "small",
            "mirror": True,
        },
    ),  # fmt: skip
    (
        "gan generate",
        ["seeds=3-5", "trunc=0.5", "noise-mode=random", "mem_budget_mb=64"],
        {"seeds": "3-5", "trunc": 0.5, "noise_mode": "random", "mem_budget_mb": 64},
    ),
    (
        "gan metrics",
        ["num=10", "metric-encoder=enc", "device=cpu"],
        {"num": 10, "metric_encoder": "enc", "device": "cpu"},
    ),
    ("datagan sample", ["n=3", "trunc=0.25", "seed=7"], {"n": 3, "trunc": 0.25, "seed": 7}),
    (
        "datagan project",
        ["steps=5", "lr=0.1", "optimize-noise=false", "ssim_weight=0.5", "mask-threshold=10"],
        {"steps": 5, "lr": 0.1, "optimize_noise": False, "ssim_weight": 0.5, "mask_threshold": 10},
    ),
    (
        "datagan train-labeler",
        ["k=2", "hidden=16,8", "max-pixels-per-image=100", "pool_mb=8"],
        {"k": 2, "hidden": [16, 8], "max_pixels_per_image": 100, "pool_mb": 8},
    ),
    (
        "datagan generate",
        ["n=2", "drop-uncertain=0.5", "band_mb=4", "shard=0/1"],
        {"n": 2, "drop_uncertain": 0.5, "band_mb": 4, "shard": "0/1"},
    ),
]
COMMANDS = [c[0] for c in CASES]


@pytest.mark.parametrize(("cmd", "items", "expected"), CASES, ids=COMMANDS)
def test_set_reaches_the_dry_run_config_and_writes_nothing(
    files: dict[str, Path], tmp_path: Path, cmd: str, items: list[str], expected: dict
) -> None:
    out = tmp_path / "out"
    r = _invoke(*_base(cmd, files, out), *_sets(*items), "--dry-run")
    assert r.exit_code == 0, r.output
    cfg = yaml.safe_load(r.output)
    assert {k: cfg[k] for k in expected} == expected
    assert not out.exists() and list(tmp_path.iterdir()) == []  # --dry-run writes nothing


# command, option, its config key, the value in --config, by --set, typed; a key only the file sets
PRECEDENCE = [
    ("gan train", "--lr", "lr", 0.01, 0.001, 0.003, ("seed", 3)),
    ("gan generate", "--trunc", "trunc", 0.9, 0.5, 0.25, ("noise_mode", "random")),
    ("gan metrics", "--num", "num", 50, 20, 10, ("metric_encoder", "enc")),
    ("datagan sample", "--n", "n", 5, 4, 3, ("seed", 3)),
    ("datagan project", "--steps", "steps", 9, 8, 7, ("seed", 3)),
    ("datagan train-labeler", "--k", "k", 5, 4, 3, ("seed", 3)),
    ("datagan generate", "--drop-uncertain", "drop_uncertain", 0.3, 0.2, 0.1, ("seed", 3)),
]


@pytest.mark.parametrize(
    ("cmd", "option", "key", "in_file", "by_set", "typed", "other"),
    PRECEDENCE,
    ids=[p[0] for p in PRECEDENCE],
)
def test_options_beat_set_which_beats_config(
    files: dict[str, Path],
    tmp_path: Path,
    cmd: str,
    option: str,
    key: str,
    in_file: float,
    by_set: float,
    typed: float,
    other: tuple[str, object],
) -> None:
    conf = tmp_path / "c.yaml"
    conf.write_text(f"{key}: {in_file}\n{other[0]}: {other[1]}\n")
    base = [*_base(cmd, files, tmp_path / "out"), "--config", str(conf)]

    def dry(*extra: str) -> dict:
        r = _invoke(*base, *extra, "--dry-run")
        assert r.exit_code == 0, r.output
        return dict(yaml.safe_load(r.output))

    assert dry()[key] == in_file
    assert dry(*_sets(f"{key}={by_set}"))[key] == by_set  # --set beats --config
    both = dry(*_sets(f"{key}={by_set}"), option, str(typed))
    assert both[key] == typed  # the option typed beats --set
    assert both[other[0]] == other[1]  # keys only the file gives stay


@pytest.mark.parametrize("cmd", COMMANDS)
def test_unknown_key_is_one_line_naming_it_and_the_keys(
    files: dict[str, Path], tmp_path: Path, cmd: str
) -> None:
    out = tmp_path / "out"
    for extra in ((), ("--dry-run",)):
        r = _invoke(*_base(cmd, files, out), *_sets("bogus-key=1"), *extra)
        line = _one_line_error(r, "--set 'bogus-key=1'", "unknown key 'bogus-key'", "out")
        assert "device" in line or "accelerator" in line  # lists what the command takes
    assert not out.exists()


# command, a float option of its config, the label the error names
FLOATS = [
    ("gan train", "lr", "--lr"),
    ("gan generate", "trunc", "--trunc"),
    ("datagan sample", "trunc", "--trunc"),
    ("datagan project", "lr", "--lr"),
    ("datagan train-labeler", "lr", "--lr"),
    ("datagan generate", "drop-uncertain", "--drop-uncertain"),
]


@pytest.mark.parametrize(("cmd", "key", "label"), FLOATS, ids=[f[0] for f in FLOATS])
@pytest.mark.parametrize("nan", ["nan", ".nan", "NaN"])
def test_nan_is_one_line_before_any_work(
    files: dict[str, Path], tmp_path: Path, cmd: str, key: str, label: str, nan: str
) -> None:
    out = tmp_path / "out"
    r = _invoke(*_base(cmd, files, out), *_sets(f"{key}={nan}"))
    _one_line_error(r, label, "finite")
    assert not out.exists()


@pytest.mark.parametrize(
    ("cmd", "item", "needles"),
    [
        ("gan train", "batch-size=0", ("--batch-size", ">= 1")),
        ("gan train", "resolution=abc", ("--resolution", "integer")),
        ("gan train", "networks=huge", ("--networks", "paper256")),
        ("gan train", "kimg=inf", ("--kimg", "finite")),
        ("gan generate", "trunc=2", ("--trunc", "<= 1")),
        ("gan metrics", "num=nan", ("--num", "integer")),
        ("datagan sample", "n=0", ("--n", ">= 1")),
        ("datagan train-labeler", "hidden=16,0", ("--hidden", ">= 1")),
        ("datagan project", "optimize-noise=maybe", ("--optimize-noise", "true/false")),
        ("datagan generate", "drop_uncertain=1", ("--drop-uncertain", "< 1")),
        ("datagan generate", "n", ("--set 'n'", "key=value")),
    ],
)
def test_bad_values_are_one_line_before_any_work(
    files: dict[str, Path], tmp_path: Path, cmd: str, item: str, needles: tuple[str, ...]
) -> None:
    out = tmp_path / "out"
    _one_line_error(_invoke(*_base(cmd, files, out), *_sets(item)), *needles)
    assert not out.exists()


def test_help_lists_set(files: dict[str, Path]) -> None:
    for cmd in COMMANDS:
        r = _invoke(*cmd.split(), "--help")
        assert r.exit_code == 0, r.output
        for opt in ("--config FILE", "--set KEY=VALUE", "--dry-run"):
            assert opt in r.output, (cmd, opt)


TRAIN = ["--resolution", "32", "--networks", "small", "--batch-size", "4", "--workers", "0",
         "--accelerator", "cpu", "--quiet"]  # fmt: skip


def test_gan_train_config_yaml_holds_set_values_and_resume_treats_set_as_the_option(
    files: dict[str, Path], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    base = ["gan", "train", "--data", str(files["imgs"]), "--out", str(run), *TRAIN]
    r = _invoke(*base, "--kimg", "0", *_sets("channel-max=8", "lr=0.001", "grid=2", "tick=2"))
    assert r.exit_code == 0, r.output
    assert json.loads(r.output.strip().splitlines()[-1])["kimg"] == 0
    stored = yaml.safe_load((run / "config.yaml").read_text())
    assert (stored["channel_max"], stored["lr"], stored["grid"], stored["tick"]) == (8, 0.001, 2, 2)

    # a --set that changes the networks of a resumed run is refused like the option that does
    resume = [*base, "--kimg", "0", "--resume"]
    by_set = _one_line_error(_invoke(*resume, *_sets("channel-max=16")), "--channel-max")
    by_option = _one_line_error(_invoke(*resume, "--channel-max", "16"))
    assert by_set == by_option
    # one that may change on resume is taken, and the stored config follows it
    r = _invoke(*resume, *_sets("channel_max=8", "tick=3"))
    assert r.exit_code == 0, r.output
    stored = yaml.safe_load((run / "config.yaml").read_text())
    assert (stored["channel_max"], stored["tick"], stored["resume"]) == (8, 3, True)


def test_gan_generate_run_uses_set_values(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "fakes"
    base = ["gan", "generate", "--network", str(files["net"]), "--out", str(out), "--quiet"]
    r = _invoke(*base, "--device", "cpu", *_sets("seeds=0-1", "trunc=0.5", "trunc=0.75"))
    assert r.exit_code == 0, r.output  # the last --set of a key wins
    assert sorted(p.name for p in out.glob("seed*.png")) == ["seed0000.png", "seed0001.png"]
    assert json.loads((out / "generate.json").read_text())["trunc"] == 0.75


def test_datagan_runs_use_set_values(files: dict[str, Path], tmp_path: Path) -> None:
    """sample -> painted masks -> train-labeler -> generate, each configured by --set; the
    config.yaml files the last two write hold the --set values."""
    net = str(files["net"])
    ann, lab, syn = tmp_path / "ann", tmp_path / "lab", tmp_path / "syn"
    r = _invoke("datagan", "sample", "--network", net, "--out", str(ann), *_sets("n=2", "seed=4"))
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in ann.glob("*.png")) == ["sample_000004.png", "sample_000005.png"]
    for png in ann.glob("sample_*.png"):
        grey = np.asarray(Image.open(png).convert("L"), dtype=np.float32)
        Image.fromarray((grey > np.median(grey)).astype(np.uint8)).save(
            ann / f"{png.stem}_mask.png"
        )

    args = ["datagan", "train-labeler", "--network", net, "--annotations", str(ann)]
    args += ["--num-classes", "2", "--out", str(lab), "--quiet"]
    sets = _sets("k=2", "hidden=8,4", "rounds=1", "epochs=1", "max-pixels-per-image=200")
    r = _invoke(*args, *sets)
    assert r.exit_code == 0, r.output
    stored = yaml.safe_load((lab / "config.yaml").read_text())
    assert (stored["k"], stored["hidden"], stored["max_pixels_per_image"]) == (2, [8, 4], 200)

    args = ["datagan", "generate", "--network", net, "--labeler", str(lab), "--out", str(syn)]
    r = _invoke(*args, "--quiet", "--device", "cpu", *_sets("n=2", "seed=10", "band-mb=1"))
    assert r.exit_code == 0, r.output
    stored = yaml.safe_load((syn / "config.yaml").read_text())
    assert (stored["n"], stored["seed"], stored["band_mb"]) == (2, 10, 1)
    assert json.loads(r.output.strip().splitlines()[-1])["kept"] == 2


@pytest.mark.parametrize(
    ("cmd", "item", "option"),
    [
        ("gan train", "data=elsewhere", "--data"),
        ("gan generate", "network=elsewhere", "--network"),
        ("datagan train-labeler", "annotations=elsewhere", "--annotations"),
    ],
)
def test_set_of_a_required_option_is_refused(
    files: dict[str, Path], tmp_path: Path, cmd: str, item: str, option: str
) -> None:
    """A required option is always typed, and typed options win, so its --set could never take
    effect: one line saying so, instead of a setting silently ignored."""
    out = tmp_path / "out"
    r = _invoke(*_base(cmd, files, out), *_sets(item), "--dry-run")
    _one_line_error(r, option, "command line")
    assert not out.exists()
