"""An ``--out`` that IS the input folder: refused before anything is written.

``--out`` inside the input folder is handled by the readers, which leave it out of the listing (see
``test_out_inside_input.py``). ``--out`` equal to the input cannot be handled that way (leaving out
everything under ``--out`` would leave out every input), and a rerun would read the command's own
outputs as input, so every command that lists an input folder and writes into ``--out`` refuses it
(:func:`glomssl.fsutil.refuse_out_is_input`): exit 2, one line on stderr naming both options and an
``--out`` to use instead, no file or folder created, nothing of an earlier run touched. Paths are
compared resolved: a trailing slash, a relative spelling and a symlink are the same folder.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from test_out_inside_input import _figure, _png, _segmenter, _tissue

from glomssl.cli import cli
from glomssl.errors import GlomsslError
from glomssl.fsutil import refuse_out_is_input

# how --out names the input folder (the input itself is given as an absolute path, except in
# "input via link", where --input is a symlink and --out the folder it points to)
SPELLINGS = ("same", "trailing slash", "relative", "symlink", "input via link")


def _snapshot(root: Path) -> dict[str, tuple[bool, int, int]]:
    """Every path below ``root`` -> (is a folder, size, mtime): no file may appear, go or change."""
    out = {}
    for p in root.rglob("*"):
        st = p.lstat()
        out[p.relative_to(root).as_posix()] = (p.is_dir(), st.st_size, st.st_mtime_ns)
    return out


def _spell(target: Path, how: str, link: str) -> tuple[str, str]:
    """(--input, --out) for ``target`` spelled ``how``; the cwd is ``target``'s parent."""
    if how == "same":
        return str(target), str(target)
    if how == "trailing slash":
        return str(target), f"{target}/"
    if how == "relative":
        return str(target), f"./{target.name}"
    (target.parent / link).symlink_to(target)
    if how == "symlink":
        return str(target), link
    assert how == "input via link"
    return link, str(target)


def _refused(r: Result, inp: str, out: str, kind: str = "folder") -> str:
    """The refusal: exit 2, nothing on stdout, one line on stderr; returns the --out it suggests."""
    assert r.exit_code == 2, r.output
    assert r.stdout == ""
    err = r.stderr
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"Error: --out {out} is the --input {kind} {inp} itself"), err
    if kind == "folder":
        assert "a rerun would read its own outputs as input" in err
        assert "choose an --out outside the input folder, e.g. " in err
    else:
        assert "would overwrite its input; choose another --out, e.g. " in err
    return err.rstrip("\n").rsplit("e.g. ", 1)[1]


# ----------------------------------------------------------------------------- the shared check


def test_refuse_out_is_input_compares_resolved_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    src = tmp_path / "figs"
    (src / "sub").mkdir(parents=True)
    (tmp_path / "link").symlink_to(src)
    for out in (src, f"{src}/", "figs", "./figs/sub/..", "link", "link/"):
        with pytest.raises(GlomsslError) as exc:
            refuse_out_is_input(out, [src], "separate")
        msg = str(exc.value)
        assert "\n" not in msg and f"e.g. {tmp_path / 'figs_out'}" in msg
        assert msg.startswith(f"--out {out} is the --input folder {src} itself"), msg
    # any of several inputs; the options are named as the command calls them
    with pytest.raises(GlomsslError, match=r"^--run figs is the --data folder link itself"):
        refuse_out_is_input("figs", [tmp_path / "other", "link"], "gan train", "--data", "--run")
    # a file --out equal to an input file would overwrite it
    (tmp_path / "m.jsonl").write_text("{}\n")
    with pytest.raises(GlomsslError, match=r"overwrite its input; .* e\.g\. .*/m_out\.jsonl$"):
        refuse_out_is_input("./m.jsonl", ["m.jsonl"], "classify")
    # not refused: --out inside the input (the readers leave it out), above it, elsewhere, fresh,
    # a missing input (the command's own error says so), no --out
    fine: list[Path | str | None] = [src / "sub", src / "new", tmp_path, "figs_out", "x", None, ""]
    for ok in fine:
        refuse_out_is_input(ok, [src], "separate")
    refuse_out_is_input("gone", ["gone"], "separate")
    assert not (tmp_path / "figs_out").exists() and not (tmp_path / "gone").exists()


# ----------------------------------------------------------------------------- the commands


def _separate(tmp_path: Path) -> tuple[Path, Callable[[str, str], list[str]]]:
    figs = tmp_path / "figs"
    figs.mkdir()
    for s in range(2):
        _figure(s).save(figs / f"f{s}.png")
    return figs, lambda i, o: ["separate", "--input", i, "--out", o, "--method", "classic"]


def _segment(tmp_path: Path) -> tuple[Path, Callable[[str, str], list[str]]]:
    model = _segmenter(tmp_path)  # tmp_path/model, outside the input folder
    imgs = tmp_path / "imgs"
    for i in range(2):
        _png(imgs / f"im{i}.png", i, (40, 40))
    return imgs, lambda i, o: ["segment", "--model", str(model), "--input", i, "--out", o]


def _curate(tmp_path: Path) -> tuple[Path, Callable[[str, str], list[str]]]:
    src = tmp_path / "panels"
    src.mkdir()
    for i in range(2):
        _tissue(i).save(src / f"t{i}.png")
    return src, lambda i, o: ["curate", "--input", i, "--out", o, "--json"]


def _dedup(tmp_path: Path) -> tuple[Path, Callable[[str, str], list[str]]]:
    src, _ = _curate(tmp_path)
    return src, lambda i, o: ["dedup", "--input", i, "--out", o, "--methods", "sha256", "--json"]


COMMANDS = {"separate": _separate, "segment": _segment, "curate": _curate, "dedup": _dedup}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_out_equal_to_input_folder_is_refused_before_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    monkeypatch.chdir(tmp_path)
    src, args = COMMANDS[command](tmp_path)
    (src / "manifest.jsonl").write_text("an earlier run's output\n")  # never touched
    suggested = set()
    for how in SPELLINGS:
        inp, out = _spell(src, how, f"link-{how.replace(' ', '-')}")
        before = _snapshot(tmp_path)
        r = CliRunner().invoke(cli, args(inp, out))
        suggested.add(_refused(r, inp, out))
        assert _snapshot(tmp_path) == before, f"{command} wrote something with --out {how}"
    (fresh,) = suggested
    assert fresh == str(tmp_path / f"{src.name}_out")
    for _ in range(2):  # the --out it suggests works, and so does a rerun into it
        r = CliRunner().invoke(cli, args(str(src), fresh))
        assert r.exit_code == 0, r.output
        assert "left out" not in r.stderr
    assert (src / "manifest.jsonl").read_text() == "an earlier run's output\n"


def test_segment_refuses_out_equal_to_any_of_its_inputs(tmp_path: Path) -> None:
    src, args = _segment(tmp_path)
    other = tmp_path / "other"
    _png(other / "x.png", 9, (40, 40))
    before = _snapshot(tmp_path)
    r = CliRunner().invoke(cli, [*args(str(other), str(src)), "--input", str(src)])
    _refused(r, str(src), str(src))
    assert _snapshot(tmp_path) == before


def test_separate_refuses_to_overwrite_its_input_manifest(tmp_path: Path) -> None:
    """``--input DIR/manifest.jsonl --out DIR``: the panels' OUT/manifest.jsonl would replace the
    input manifest at the end of the run (curate and dedup refuse it the same way)."""
    from glomssl.manifest import image_row, write_manifest

    figs, args = _separate(tmp_path)
    man = figs / "manifest.jsonl"
    write_manifest(man, [image_row(p, figs) for p in sorted(figs.glob("*.png"))])
    before = _snapshot(tmp_path)
    r = CliRunner().invoke(cli, args(str(man), f"{figs}/"))
    assert r.exit_code == 2, r.output
    assert r.stderr == (
        f"Error: --out {figs}/ would overwrite the input manifest {man}; choose another output "
        "folder\n"
    )
    assert _snapshot(tmp_path) == before


def _stand_in_classifier(monkeypatch: pytest.MonkeyPatch) -> None:
    """The model is a stand-in (the files, the reader and the outputs are real), as in
    ``test_out_inside_input.py``."""
    from glomssl.finetune.classifier import infer

    def probs(_m: object, _meta: object, paths: list[Path], *_a: object) -> np.ndarray:
        return np.tile(np.array([[0.7, 0.3]], np.float32), (len(paths), 1))

    monkeypatch.setattr(infer, "load_classifier", lambda *_a: (None, {"classes": ["a", "b"]}))
    monkeypatch.setattr(infer, "classify_images", probs)


def test_classify_refuses_out_equal_to_its_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """classify's --out is a .jsonl file: equal to an input manifest it would overwrite it; equal to
    an input folder (named ``*.jsonl``) it would write among the images."""
    from glomssl.manifest import image_row, write_manifest

    _stand_in_classifier(monkeypatch)
    monkeypatch.chdir(tmp_path)
    crops = tmp_path / "crops.jsonl"  # a folder, oddly named
    for i in range(2):
        _png(crops / f"im{i}.png", i)
    man = tmp_path / "preds.jsonl"
    write_manifest(man, [image_row(p, tmp_path) for p in sorted(crops.iterdir())])
    original = man.read_bytes()

    def args(i: str, o: str) -> list[str]:
        return ["classify", "--model", "m", "--input", i, "--out", o, "--quiet"]

    for how in ("same", "relative", "symlink", "input via link"):  # "crops.jsonl/": not .jsonl
        inp, out = _spell(crops, how, f"link-{how.replace(' ', '-')}.jsonl")
        before = _snapshot(tmp_path)
        s = _refused(CliRunner().invoke(cli, args(inp, out)), inp, out)
        assert s == str(tmp_path / "crops_out.jsonl")
        assert _snapshot(tmp_path) == before, how
    for how in ("same", "relative", "symlink", "input via link"):
        inp, out = _spell(man, how, f"man-{how.replace(' ', '-')}.jsonl")
        before = _snapshot(tmp_path)
        s = _refused(CliRunner().invoke(cli, args(inp, out)), inp, out, kind="file")
        assert s == str(tmp_path / "preds_out.jsonl")
        assert _snapshot(tmp_path) == before, how
    assert man.read_bytes() == original  # the input manifest was not overwritten
    # another --out reads the same manifest
    r = CliRunner().invoke(cli, args(str(man), str(tmp_path / "preds_out.jsonl")))
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in (tmp_path / "preds_out.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and man.read_bytes() == original


# ----------------------------------------------------------------------------- gan, datagan, synth


def _pictures(folder: Path, n: int = 3) -> None:
    folder.mkdir()
    for i in range(n):
        _png(folder / f"t{i}.png", i, (48, 48))


@pytest.mark.parametrize(
    ("command", "opt"),
    [
        (["gan", "train", "--resolution", "32", "--kimg", "0", "--accelerator", "cpu"], "--data"),
        (["datagan", "project", "--network", "NET"], "--images"),
        (["separator", "synth", "--n", "4"], "--images"),
    ],
    ids=["gan train", "datagan project", "separator synth"],
)
def test_other_writers_refuse_out_equal_to_their_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str], opt: str
) -> None:
    """gan train would write grids among its images and train on them on --resume; datagan project
    would overwrite the user's pictures with its own crops of the same names; separator synth would
    leave figures among the pictures a later synth run draws from."""
    monkeypatch.chdir(tmp_path)
    pics = tmp_path / "pics"
    _pictures(pics)
    (tmp_path / "net").mkdir()
    argv = [a.replace("NET", str(tmp_path / "net")) for a in command]
    before = _snapshot(tmp_path)
    r = CliRunner().invoke(cli, [*argv, opt, str(pics), "--out", "pics/"])
    assert r.exit_code == 2, r.output
    err = r.stderr
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f"is the {opt} folder {pics} itself" in err and "choose an --out outside" in err, err
    assert _snapshot(tmp_path) == before
