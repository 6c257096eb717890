"""GAN snapshots (save/load round trip, run-folder resolution, optimiser state, bad files) and
``gan generate`` (seed parsing, determinism by seed, resume, manifest)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from glomssl.datagan.generate import GenerateConfig, parse_seeds, run_generate, seed_latents
from glomssl.datagan.networks import create_discriminator, create_generator
from glomssl.datagan.snapshot import (
    load_generator,
    load_optimizer_state,
    load_snapshot,
    save_snapshot,
    snapshot_name,
)
from glomssl.errors import GlomsslError
from glomssl.manifest import read_manifest


def _nets(seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(seed)
    G = create_generator("small", 32, channel_max=8)
    D = create_discriminator("small", 32, channel_max=8)
    G_ema = create_generator("small", 32, channel_max=8)
    return G, D, G_ema


def _snap(run: Path, nimg: int, seed: int = 0) -> tuple[Path, tuple[torch.nn.Module, ...]]:
    G, D, G_ema = _nets(seed)
    path = save_snapshot(run / snapshot_name(nimg), G, D, G_ema, 0.25, nimg, {"resolution": 32})  # type: ignore[arg-type]
    return path, (G, D, G_ema)


def test_round_trip_restores_every_tensor(tmp_path: Path) -> None:
    path, (G, D, G_ema) = _snap(tmp_path, 12000)
    assert path.name == "snapshot-000012.safetensors" and path.with_suffix(".json").is_file()
    snap = load_snapshot(path)
    for key, net in (("G", G), ("D", D), ("G_ema", G_ema)):
        sd = snap[key].state_dict()
        for name, t in net.state_dict().items():
            assert torch.equal(sd[name], t), f"{key}.{name}"
    assert snap["augment_p"] == pytest.approx(0.25)
    assert snap["meta"]["cur_nimg"] == 12000 and snap["meta"]["config"] == {"resolution": 32}
    assert not snap["G_ema"].training and snap["G"].training


def test_run_folder_resolves_to_latest_and_load_generator(tmp_path: Path) -> None:
    _snap(tmp_path, 0, seed=1)
    _, (_, _, newest_ema) = _snap(tmp_path, 40000, seed=2)
    _snap(tmp_path, 8000, seed=3)
    G, meta = load_generator(tmp_path)
    assert meta["snapshot"].endswith("snapshot-000040.safetensors") and meta["cur_nimg"] == 40000
    assert not G.training and G.num_ws == 8 and G.img_resolution == 32
    z = torch.randn(2, G.z_dim)
    newest_ema.eval()
    torch.testing.assert_close(G(z), newest_ema(z))


def test_optimizer_state_round_trip(tmp_path: Path) -> None:
    G, D, G_ema = _nets()
    opt = torch.optim.Adam(D.parameters(), lr=1e-3, betas=(0.0, 0.99))
    D(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()
    path = save_snapshot(tmp_path / snapshot_name(4), G, D, G_ema, 0.0, 4, opt_D=opt)  # type: ignore[arg-type]
    tensors = load_snapshot(path)["tensors"]
    D2 = create_discriminator("small", 32, channel_max=8)
    opt2 = torch.optim.Adam(D2.parameters(), lr=1e-3, betas=(0.0, 0.99))
    assert load_optimizer_state(opt2, "opt_D", tensors)
    assert not load_optimizer_state(opt2, "opt_G", tensors)
    a, b = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert a.keys() == b.keys()
    for i in a:
        assert torch.equal(a[i]["exp_avg_sq"], b[i]["exp_avg_sq"])


def test_bad_snapshot_inputs_raise_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(GlomsslError, match="does not exist"):
        load_snapshot(tmp_path / "missing.safetensors")
    with pytest.raises(GlomsslError, match="no snapshot"):
        load_generator(tmp_path)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(GlomsslError, match="not a safetensors"):
        load_snapshot(junk)
    path, _ = _snap(tmp_path, 1000)
    side = path.with_suffix(".json")
    meta = json.loads(side.read_text())
    meta["G_kwargs"]["channel_max"] = 16  # the weights no longer fit the recorded architecture
    side.write_text(json.dumps(meta))
    with pytest.raises(GlomsslError, match="do not match"):
        load_snapshot(path)


def test_parse_seeds() -> None:
    assert parse_seeds("0-3") == [0, 1, 2, 3]
    assert parse_seeds("1,5,7") == [1, 5, 7]
    assert parse_seeds("2-3, 10, 2") == [2, 3, 10]
    for bad in ("", "a-b", "5-1", "1;2"):
        with pytest.raises(GlomsslError, match="--seeds"):
            parse_seeds(bad)


def test_huge_seed_ranges_are_refused_before_expansion() -> None:
    """`--seeds 0-9999999999` was a MemoryError during validation (issue 10, item 5)."""
    import time

    t0 = time.perf_counter()
    with pytest.raises(GlomsslError, match="seeds go up to"):
        parse_seeds("0-9999999999")
    with pytest.raises(GlomsslError, match="more than 1,000,000 seeds"):
        parse_seeds("0-4000000000")
    with pytest.raises(GlomsslError, match="seeds go up to"):
        parse_seeds("99999999999")
    assert time.perf_counter() - t0 < 1.0
    assert len(parse_seeds("0-999999")) == 1_000_000


def test_batch_size_does_not_change_the_images(tmp_path: Path) -> None:
    """gan generate draws as many images per pass as the memory budget allows; each image must be
    the one it would be when drawn alone."""
    from PIL import Image

    run = tmp_path / "run"
    _snap(run, 0)
    outs = {}
    for bs in (1, 5):
        out = tmp_path / f"b{bs}"
        cfg = GenerateConfig(network=str(run), seeds="0-4", out=str(out), batch_size=bs, quiet=True)
        run_generate(cfg)
        outs[bs] = out
    default = tmp_path / "budget"
    run_generate(GenerateConfig(network=str(run), seeds="0-4", out=str(default), quiet=True))
    for s in range(5):
        one = np.asarray(Image.open(outs[1] / f"seed{s:04d}.png"), dtype=int)
        for other in (outs[5], default):
            img = np.asarray(Image.open(other / f"seed{s:04d}.png"), dtype=int)
            assert np.abs(img - one).max() <= 1  # float rounding may move a value across .5


def test_generate_is_deterministic_by_seed_and_resumes(tmp_path: Path) -> None:
    _snap(tmp_path / "run", 1000)
    a = run_generate(
        GenerateConfig(
            network=str(tmp_path / "run"),
            seeds="0-4",
            out=str(tmp_path / "a"),
            batch_size=2,
            quiet=True,
        )
    )
    b = run_generate(
        GenerateConfig(
            network=str(tmp_path / "run"),
            seeds="4,2",
            out=str(tmp_path / "b"),
            batch_size=5,
            quiet=True,
        )
    )
    assert a["images"] == 5 and b["images"] == 2
    for s in (2, 4):  # same seed -> same pixels, whatever the batch it was generated in
        assert (tmp_path / "a" / f"seed{s:04d}.png").read_bytes() == (
            tmp_path / "b" / f"seed{s:04d}.png"
        ).read_bytes()
    assert (tmp_path / "a" / "seed0000.png").read_bytes() != (
        tmp_path / "a" / "seed0001.png"
    ).read_bytes()
    rows = read_manifest(tmp_path / "a" / "manifest.jsonl")
    assert [r["seed"] for r in rows] == [0, 1, 2, 3, 4] and rows[0]["width"] == 32
    assert rows[0]["source"]["generator"].endswith("snapshot-000001.safetensors")
    # a rerun keeps finished images and only fills the gaps
    (tmp_path / "a" / "seed0003.png").unlink()
    again = run_generate(
        GenerateConfig(
            network=str(tmp_path / "run"), seeds="0-4", out=str(tmp_path / "a"), quiet=True
        )
    )
    assert again["generated"] == 1 and (tmp_path / "a" / "seed0003.png").is_file()
    torch.testing.assert_close(seed_latents([7], 64), seed_latents([3, 7], 64)[1:])


def test_truncation_zero_gives_identical_images(tmp_path: Path) -> None:
    _snap(tmp_path / "run", 1000)
    run_generate(
        GenerateConfig(
            network=str(tmp_path / "run"),
            seeds="0-1",
            trunc=0.0,
            out=str(tmp_path / "t"),
            quiet=True,
        )
    )
    assert (tmp_path / "t" / "seed0000.png").read_bytes() == (
        tmp_path / "t" / "seed0001.png"
    ).read_bytes()


def test_cli_subprocess_bad_network_is_one_line_error(tmp_path: Path) -> None:
    """Through a real process: the console entry point prints one `Error:` line, exit 2."""
    import subprocess
    import sys

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "glomssl",
            "gan",
            "generate",
            "--network",
            str(tmp_path / "none"),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("Error: --network") and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()
