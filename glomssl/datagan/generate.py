"""Generate images from a trained GAN (``glomssl gan generate``) and save sample grids.

Each seed gives one latent z ~ N(0, I) drawn from ``numpy.random.RandomState(seed)``, so an image depends
only on its seed (not on the batch it was generated in). The truncation trick (StyleGAN, section 3.3;
w' = w_avg + psi (w - w_avg)) trades variety for fidelity. Output: ``seed%04d.png`` per seed and a
``manifest.jsonl`` (glomssl manifest rows plus ``seed``, ``trunc`` and the snapshot they came from)
listing every image of the folder, so several runs with other ``--seeds`` into one ``--out`` add up.
Existing PNGs are kept, so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glomssl.config import opt
from glomssl.datagan.budget import DEFAULT_BUDGET_MB, images_per_batch
from glomssl.datagan.progress import Progress
from glomssl.errors import GlomsslError

_RANGE = re.compile(r"^(\d+)-(\d+)$")


@dataclass
class GenerateConfig:
    """Options of ``glomssl gan generate``."""

    network: str = ""  # run folder (latest snapshot) or snapshot file
    seeds: str = "0-99"
    trunc: float = opt(1.0, ge=0, le=1)
    out: str = ""
    noise_mode: str = "const"
    batch_size: int | None = opt(None, ge=1)  # None: as many as fit in mem_budget_mb
    mem_budget_mb: int = opt(DEFAULT_BUDGET_MB, ge=16)
    device: str = "auto"
    quiet: bool = False

    def validate(self) -> None:
        from glomssl.engine import resolve_device

        resolve_device(self.device)
        parse_seeds(self.seeds)
        if self.noise_mode not in ("const", "random", "none"):
            raise GlomsslError(
                f"--noise-mode {self.noise_mode!r} is not one of const, random, none"
            )


MAX_SEEDS = 1_000_000  # per run; a larger set is several runs (they resume into one --out)
MAX_SEED = 2**32 - 1  # numpy's RandomState takes 32-bit seeds


def parse_seeds(spec: str) -> list[int]:
    """ "0-99" -> 0..99, "1,5,7" -> [1, 5, 7], "0-3,10" -> [0, 1, 2, 3, 10] (order kept, no repeats).

    Ranges are counted before they are expanded, so "0-9999999999" is a one-line error, not a
    MemoryError; at most MAX_SEEDS seeds per run."""
    parts: list[tuple[int, int]] = []
    total = 0
    for part in str(spec).split(","):
        part = part.strip()
        if not part:
            continue
        m = _RANGE.match(part)
        if m:
            a, b = int(m.group(1)), int(m.group(2))
            if b < a:
                raise GlomsslError(f"--seeds range {part!r} runs backwards; write it as {b}-{a}")
        elif part.isdigit():
            a = b = int(part)
        else:
            raise GlomsslError(
                f"--seeds {spec!r}: {part!r} is not a seed or range (e.g. 0-99 or 1,5,7)"
            )
        if b > MAX_SEED:
            raise GlomsslError(f"--seeds {part!r}: seeds go up to {MAX_SEED}")
        total += b - a + 1
        if total > MAX_SEEDS:
            raise GlomsslError(
                f"--seeds {spec!r} names more than {MAX_SEEDS:,} seeds; generate in several runs "
                "into the same --out (each run resumes)"
            )
        parts.append((a, b))
    if not parts:
        raise GlomsslError(f"--seeds {spec!r} names no seeds; use e.g. 0-99 or 1,5,7")
    out: list[int] = []
    for a, b in parts:
        out.extend(range(a, b + 1))
    return list(dict.fromkeys(out))


def seed_latents(seeds: list[int], z_dim: int) -> torch.Tensor:
    """(len(seeds), z_dim) latents, each from its own RandomState(seed)."""
    z = np.stack([np.random.RandomState(s).randn(z_dim) for s in seeds])
    return torch.from_numpy(z).float()


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8."""
    x = ((img.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def _save_png(arr: np.ndarray, path: Path) -> None:
    from PIL import Image

    from glomssl.fsutil import atomic_open

    with atomic_open(path, "wb") as fh:
        Image.fromarray(np.ascontiguousarray(arr)).save(fh, format="PNG")


@torch.no_grad()
def save_grid(
    G: Any,
    z: torch.Tensor,
    n: int,
    path: Path,
    truncation_psi: float = 1.0,
    budget_mb: float = DEFAULT_BUDGET_MB,
) -> None:
    """Save an n x n grid of G's images for latents z (n*n, z_dim), constant noise, as PNG; drawn
    in batches that fit ``budget_mb`` (as uint8, so the grid itself costs R*R*3 bytes per image)."""
    dev = next(G.parameters()).device
    size = images_per_batch(G, budget_mb)
    parts = [to_uint8(G(c.to(dev), truncation_psi, noise_mode="const")) for c in z.split(size)]
    x = np.concatenate(parts)  # (n*n, R, R, 3)
    r = x.shape[1]
    grid = x.reshape(n, n, r, r, 3).transpose(0, 2, 1, 3, 4).reshape(n * r, n * r, 3)
    _save_png(grid, path)


SETTINGS_NAME = "generate.json"  # what an --out folder's images were made with


def _settings_of_manifest(out: Path) -> dict[str, Any] | None:
    """The settings an older --out (no generate.json) recorded in its manifest rows; None when it
    has no manifest, or rows that disagree or cannot be read."""
    import json

    mpath = out / "manifest.jsonl"
    if not mpath.is_file():
        return None
    found: set[str] = set()
    try:
        for line in mpath.read_text(encoding="utf-8").splitlines():
            if line.strip():
                r = json.loads(line)
                src = r.get("source") or {}
                key = {"trunc": r.get("trunc"), "noise_mode": r.get("noise_mode")}
                key["generator"] = src.get("generator") if isinstance(src, dict) else None
                found.add(json.dumps(key, sort_keys=True))
    except (OSError, ValueError, AttributeError):
        return None
    return json.loads(found.pop()) if len(found) == 1 else None


def _check_out_settings(out: Path, settings: dict[str, Any]) -> bool:
    """Refuse an --out whose images were made with other settings (another generator snapshot,
    --trunc or --noise-mode): a rerun keeps the images already there, so the manifest would
    describe them wrongly. Returns True when ``out/generate.json`` must be (re)written."""
    import json

    spath = out / SETTINGS_NAME
    old: Any = None
    if spath.is_file():
        try:
            old = json.loads(spath.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        if not isinstance(old, dict):
            raise GlomsslError(
                f"{spath} is damaged, so the settings of the images in --out {out} are unknown; "
                "use a new --out"
            )
        same_gen = old.get("sha256") == settings["sha256"]
    elif any(out.glob("seed*.png")):
        old = _settings_of_manifest(out)
        if old is None:
            raise GlomsslError(
                f"--out {out} holds seed images whose settings are not recorded (no {SETTINGS_NAME}, "
                "no readable manifest.jsonl); use a new --out"
            )
        gen = old.get("generator")
        same_gen = gen is not None and Path(gen).resolve() == Path(settings["generator"]).resolve()
    else:
        return True
    diffs = []
    if not same_gen:
        diffs.append(f"generator {old.get('generator')}")
    for key, flag in (("trunc", "--trunc"), ("noise_mode", "--noise-mode")):
        if old.get(key) != settings[key]:
            diffs.append(f"{flag} {old.get(key)}")
    if diffs:
        raise GlomsslError(
            f"--out {out} holds images made with {', '.join(diffs)} (this run: --network "
            f"{settings['generator']}, --trunc {settings['trunc']}, --noise-mode "
            f"{settings['noise_mode']}); use a new --out, or the same settings to resume"
        )
    return not spath.is_file()


_SEED_PNG = re.compile(r"^seed(\d+)\.png$")


def _seeds_in_folder(out: Path) -> list[int]:
    """Seeds of the ``seed%04d.png`` images in ``out`` (names this command writes)."""
    found = []
    for p in out.glob("seed*.png"):
        m = _SEED_PNG.match(p.name)
        if m and p.is_file() and p.name == f"seed{int(m.group(1)):04d}.png":
            found.append(int(m.group(1)))
    return sorted(found)


def _manifest_rows_by_seed(out: Path) -> dict[int, dict[str, Any]]:
    """Rows of an earlier run's ``out/manifest.jsonl`` by seed, those that name their own seed's
    image; {} when there is none or it cannot be read (its images are then listed afresh)."""
    import json

    mpath = out / "manifest.jsonl"
    rows: dict[int, dict[str, Any]] = {}
    if not mpath.is_file():
        return rows
    try:
        lines = mpath.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return rows
    for line in lines:
        try:
            r = json.loads(line) if line.strip() else None
        except ValueError:
            continue
        if not isinstance(r, dict):
            continue
        s = r.get("seed")
        if isinstance(s, int) and not isinstance(s, bool) and r.get("path") == f"seed{s:04d}.png":
            rows[s] = r
    return rows


def run_generate(cfg: GenerateConfig) -> dict[str, Any]:
    """Write one PNG per seed and a manifest.jsonl into ``cfg.out``; returns a summary.

    The manifest lists every ``seed*.png`` of the folder, this run's seeds and earlier runs' alike
    (rows kept from the old manifest, or built for images it lacks), ordered by seed.

    ``OUT/generate.json`` records the snapshot (path, sha256), ``trunc`` and ``noise_mode``; a rerun
    into the same folder resumes only with those, so every manifest row tells how its image was made.
    """
    import json

    from glomssl.datagan.snapshot import load_generator
    from glomssl.fsutil import atomic_write_text, ensure_writable_dir, sha256_file
    from glomssl.manifest import image_row, write_manifest

    cfg.validate()
    if not cfg.out:
        raise GlomsslError("--out is required: the folder to write images into")
    seeds = parse_seeds(cfg.seeds)
    from glomssl.engine import resolve_device

    device = resolve_device(cfg.device)
    G, meta = load_generator(cfg.network, device=device)
    settings = {
        "generator": str(Path(meta["snapshot"]).resolve()),
        "sha256": sha256_file(meta["snapshot"]),
        "kimg": meta.get("kimg"),
        "trunc": cfg.trunc,
        "noise_mode": cfg.noise_mode,
    }
    out_p = Path(cfg.out)
    write_settings = _check_out_settings(out_p, settings) if out_p.is_dir() else True
    out = ensure_writable_dir(cfg.out)
    if write_settings:
        atomic_write_text(out / SETTINGS_NAME, json.dumps(settings, indent=1) + "\n")
    todo = [s for s in seeds if not (out / f"seed{s:04d}.png").is_file()]
    bar = Progress("gan generate", len(seeds), len(seeds) - len(todo), cfg.quiet)
    size = cfg.batch_size or images_per_batch(G, cfg.mem_budget_mb)
    for i in range(0, len(todo), size):
        chunk = todo[i : i + size]
        z = seed_latents(chunk, G.z_dim).to(device)
        with torch.no_grad():
            imgs = to_uint8(G(z, truncation_psi=cfg.trunc, noise_mode=cfg.noise_mode))
        for s, arr in zip(chunk, imgs, strict=True):
            _save_png(arr, out / f"seed{s:04d}.png")
        bar.update(len(chunk))
    bar.close()
    snap = meta.get("snapshot", "")

    def row(s: int) -> dict[str, Any]:
        return image_row(
            out / f"seed{s:04d}.png",
            out,
            seed=s,
            trunc=cfg.trunc,
            noise_mode=cfg.noise_mode,
            source={"generator": snap, "kimg": meta.get("kimg"), "sha256": settings["sha256"]},
        )

    rows = {s: row(s) for s in seeds}
    # the folder may hold other seeds from earlier runs (same settings, checked above): list them too
    old_rows = _manifest_rows_by_seed(out)
    for s in _seeds_in_folder(out):
        if s not in rows:
            rows[s] = old_rows.get(s) or row(s)
    write_manifest(out / "manifest.jsonl", [rows[s] for s in sorted(rows)])  # atomic
    return {
        "out": str(out),
        "images": len(seeds),
        "manifest_rows": len(rows),
        "generated": len(todo),
        "snapshot": snap,
        "manifest": str(out / "manifest.jsonl"),
    }
