"""Run folders, safetensors weights with sidecars, metrics logs, atomic writes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from glomssl.errors import GlomsslError
from glomssl.fsutil import atomic_open, atomic_write_text, ensure_writable_dir
from glomssl.runs import MetricsLogger, load_weights, next_run_dir, read_metrics, save_weights


def test_numbered_run_dirs(tmp_path: Path) -> None:
    a = next_run_dir(tmp_path, "pretrain-simsiam")
    b = next_run_dir(tmp_path, "gan")
    assert a.name == "00000-pretrain-simsiam" and b.name == "00001-gan"
    (tmp_path / "00007-old").mkdir()
    assert next_run_dir(tmp_path, "x").name == "00008-x"


def test_weights_round_trip_and_sidecar(tmp_path: Path) -> None:
    sd = {"w": torch.randn(3, 4), "b": torch.arange(5)}
    p = save_weights(tmp_path / "m.safetensors", sd, {"arch": "tiny", "step": 3})
    tensors, meta = load_weights(p)
    assert torch.equal(tensors["w"], sd["w"]) and torch.equal(tensors["b"], sd["b"])
    assert meta["arch"] == "tiny" and meta["step"] == 3 and "glomssl_version" in meta
    assert sorted(x.name for x in tmp_path.iterdir()) == ["m.json", "m.safetensors"]


def test_load_weights_refuses_other_files(tmp_path: Path) -> None:
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"definitely not safetensors")
    with pytest.raises(GlomsslError, match="not a safetensors"):
        load_weights(bad)
    with pytest.raises(GlomsslError, match="does not exist"):
        load_weights(tmp_path / "missing.safetensors")


@pytest.mark.parametrize("sidecar", [b"\x9f\xff binary", b"[1, 2]", b'"text"'])
def test_load_weights_refuses_a_broken_sidecar(tmp_path: Path, sidecar: bytes) -> None:
    """Not UTF-8, or valid JSON that is no object: a one-line error, not a traceback later."""
    p = save_weights(tmp_path / "m.safetensors", {"w": torch.zeros(2)}, {"arch": "tiny"})
    (tmp_path / "m.json").write_bytes(sidecar)
    with pytest.raises(GlomsslError, match=r"m\.json is not"):
        load_weights(p)


def test_metrics_logger_appends(tmp_path: Path) -> None:
    log = MetricsLogger(tmp_path / "metrics.jsonl")
    log.log(step=1, loss=0.5)
    log.log(step=2, loss=torch.tensor(0.25).item())
    assert read_metrics(tmp_path / "metrics.jsonl") == [
        {"step": 1, "loss": 0.5},
        {"step": 2, "loss": 0.25},
    ]


def test_atomic_write_leaves_old_file_on_error(tmp_path: Path) -> None:
    f = tmp_path / "a.txt"
    atomic_write_text(f, "old")
    with pytest.raises(RuntimeError):
        with atomic_open(f, "w") as fh:
            fh.write("half")
            raise RuntimeError("crash")
    assert f.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_unwritable_dir_is_one_line_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(GlomsslError, match="not a writable folder"):
        ensure_writable_dir(blocker / "sub")


def test_save_weights_writes_the_sidecar_before_the_weights(tmp_path, monkeypatch) -> None:
    """A crash between the two renames must never leave weights without their sidecar."""
    import os

    import torch

    from glomssl import runs

    real_replace = os.replace
    calls: list[str] = []

    def crashing_replace(src, dst):  # type: ignore[no-untyped-def]
        calls.append(str(dst))
        if str(dst).endswith(".safetensors"):
            raise KeyboardInterrupt  # the process dies right before the weights land
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crashing_replace)
    target = tmp_path / "w.safetensors"
    try:
        runs.save_weights(target, {"a": torch.zeros(2)}, {"kind": "test"})
    except KeyboardInterrupt:
        pass
    assert not target.exists()
    assert calls[0].endswith(".json") and calls[-1].endswith(".safetensors")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_an_out_that_is_a_file_is_one_line_error(tmp_path: Path) -> None:
    """`detect train`, `separator train --out FILE` used to raise FileExistsError (a traceback)."""
    blocker = tmp_path / "somefile.txt"
    blocker.write_text("x")
    with pytest.raises(GlomsslError, match="not a writable folder"):
        next_run_dir(blocker, "detector")


def test_atomic_write_onto_a_folder_is_one_line_error(tmp_path: Path) -> None:
    """`embed`, `classify`, `gan metrics --out X` where X is a folder: IsADirectoryError before."""
    folder = tmp_path / "out.json"
    folder.mkdir()
    with pytest.raises(GlomsslError, match="is a folder, not a file"):
        atomic_write_text(folder, "{}")
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temporary file left behind


def test_saved_weights_follow_the_umask_like_other_outputs(tmp_path: Path) -> None:
    """safetensors creates 0600 files; a user's weights must be as readable as their other outputs
    (a shared group folder, a web server, a colleague)."""
    import os

    from glomssl.fsutil import FILE_MODE

    w = save_weights(tmp_path / "m.safetensors", {"a": torch.zeros(2)}, {"k": 1})
    mode = os.stat(w).st_mode & 0o777
    assert mode == FILE_MODE == os.stat(tmp_path / "m.json").st_mode & 0o777, oct(mode)
