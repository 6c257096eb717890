"""Config merging: defaults <- YAML <- CLI, type coercion and one-line errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import yaml

from glomssl.config import build_config, save_config, to_dict
from glomssl.errors import GlomsslError


@dataclass
class Demo:
    lr: float = 0.05
    steps: int = 10
    arch: Literal["resnet18", "resnet50"] = "resnet18"
    tags: list[str] = field(default_factory=list)
    note: str | None = None
    flag: bool = False

    def validate(self) -> None:
        if self.lr <= 0:
            raise GlomsslError(f"lr must be positive, got {self.lr}; pass e.g. --lr 0.05")


def test_precedence_defaults_file_cli(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("lr: 0.1\nsteps: 20\ntags: [a, b]\n")
    cfg = build_config(Demo, f, {"steps": 5, "note": None, "flag": "true"})
    assert (cfg.lr, cfg.steps, cfg.tags, cfg.note, cfg.flag) == (0.1, 5, ["a", "b"], None, True)
    assert build_config(Demo).arch == "resnet18"


def test_saved_config_round_trips(tmp_path: Path) -> None:
    cfg = build_config(Demo, None, {"tags": "x,y", "arch": "resnet50"})
    save_config(cfg, tmp_path / "config.yaml")
    data = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert data == to_dict(cfg) and data["tags"] == ["x", "y"]
    assert build_config(Demo, tmp_path / "config.yaml") == cfg


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"steps": "ten"}, "steps: expected an integer"),
        ({"steps": 1.5}, "steps: expected an integer"),
        ({"steps": float("nan")}, "steps: expected an integer"),
        ({"steps": float("inf")}, "steps: expected an integer"),
        ({"steps": "-inf"}, "steps: expected an integer"),
        ({"arch": "vgg"}, "arch: 'vgg' is not one of"),
        ({"lr": -1}, "lr must be positive"),
        ({"flag": "maybe"}, "flag: expected true/false"),
        ({"bogus": 1}, "unknown option"),
    ],
)
def test_bad_values_raise_one_line(overrides: dict, match: str) -> None:
    with pytest.raises(GlomsslError, match=match) as exc:
        build_config(Demo, None, overrides)
    assert "\n" not in str(exc.value)


def test_bad_yaml_files(tmp_path: Path) -> None:
    with pytest.raises(GlomsslError, match="does not exist"):
        build_config(Demo, tmp_path / "none.yaml")
    f = tmp_path / "bad.yaml"
    f.write_text("lr: [unclosed\n")
    with pytest.raises(GlomsslError, match="not valid YAML"):
        build_config(Demo, f)
    f.write_text("- a list\n")
    with pytest.raises(GlomsslError, match="mapping"):
        build_config(Demo, f)
    f.write_bytes(b"lr: 0.1\n\x9f\xff\x00 binary")
    with pytest.raises(GlomsslError, match="cannot read config file .*bad.yaml"):
        build_config(Demo, f)


def test_a_bad_value_names_the_option_and_a_folder_as_config_is_named(tmp_path: Path) -> None:
    """`--layers a,b` used to say `config layers: expected an integer`; the user typed --layers."""

    @dataclass
    class Opts:
        layers: list[int] = field(default_factory=list)
        steps: int = 1

    with pytest.raises(GlomsslError, match=r"^--layers: expected an integer, got 'a'$"):
        build_config(Opts, overrides={"layers": "a,b"})
    with pytest.raises(GlomsslError, match=r"^--steps: expected an integer"):
        build_config(Opts, overrides={"steps": "many"})
    with pytest.raises(GlomsslError, match="is a folder"):
        build_config(Opts, config_file=tmp_path)


def test_a_single_number_for_a_list_is_a_list_of_one(tmp_path: Path) -> None:
    """``--set hidden=64`` and ``hidden: 64`` in YAML read as a number: one width, not an error."""
    from glomssl.config import _coerce

    assert _coerce("widths", 64, list[int]) == [64]
    assert _coerce("widths", "64", list[int]) == [64]
    assert _coerce("widths", 0.5, tuple[float, ...]) == (0.5,)
    with pytest.raises(GlomsslError, match="expected a list"):
        _coerce("widths", True, list[int])  # a flag is not a width
    cfg = tmp_path / "c.yaml"
    cfg.write_text("tags: 7\n")
    assert build_config(Demo, str(cfg), {}).tags == ["7"]  # from a YAML file too
