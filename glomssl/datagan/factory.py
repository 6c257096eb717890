"""The label factory: sample images to annotate, and generate labelled image/mask pairs at scale.

``run_datagan_generate`` synthesises an image per seed, labels it at the generator's full resolution
with the labeler ensemble band by band (bounded memory, see :mod:`glomssl.datagan.features`), scores
it by the mean of its top-decile pixel Jensen-Shannon divergences (datasetGAN's uncertainty ranking)
and, with ``drop_uncertain = f``, generates ``ceil(n / (1 - f))`` candidates and keeps the ``n`` most
certain.

Crash safety and sharding: every candidate seed is committed by an atomic ``records/<seed>.json``
written *after* its image and mask PNGs, so a rerun skips finished seeds and a kill -9 loses at most
the image in flight. Shard ``i/N`` (``--shard`` or the ``RANK``/``WORLD_SIZE`` that torchrun, Fabric
and SLURM launchers set) takes seeds ``i, i+N, ...``; the shard that finds every record present ranks
them, deletes the dropped candidates and writes ``manifest.jsonl`` and ``preview.png``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from glomssl.config import opt
from glomssl.errors import GlomsslError

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn


def seed_latent(G: nn.Module, seed: int, trunc: float, device: str = "cpu") -> torch.Tensor:
    """W+ latent (1, num_ws, w_dim) of an integer seed: z ~ N(0, I) from a seeded numpy generator."""
    import numpy as np
    import torch

    z = np.random.RandomState(seed).randn(1, int(G.z_dim))  # type: ignore[arg-type]
    with torch.no_grad():
        return G.mapping(torch.from_numpy(z).float().to(device), truncation_psi=trunc)  # type: ignore[operator,no-any-return]


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> (H, W, 3) uint8."""
    return (img.clamp(-1, 1) * 127.5 + 127.5).round().byte().permute(1, 2, 0).cpu().numpy()


def _save_png(path: Path, arr: np.ndarray) -> None:
    import io

    from PIL import Image

    from glomssl.fsutil import atomic_write_bytes

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue(), fsync=False)


# --------------------------------------------------------------------------------------------------
# sample: images + latents to annotate


@dataclass
class SampleConfig:
    """``glomssl datagan sample`` options."""

    network: str
    out: str
    n: int = 24
    seed: int = opt(0, ge=0)
    trunc: float = opt(0.7, ge=0, le=1)
    device: str = "cpu"

    def validate(self) -> None:
        from glomssl.engine import resolve_device

        resolve_device(self.device)
        if self.n < 1:
            raise GlomsslError("--n must be at least 1")
        if not 0.0 <= self.trunc <= 2.0:
            raise GlomsslError("--trunc must be in [0, 2] (1 = no truncation)")


def run_datagan_sample(cfg: SampleConfig, G: nn.Module | None = None) -> dict[str, Any]:
    """Write ``sample_<seed>.png`` + ``sample_<seed>.npz`` (its W+ latent) for ``n`` seeds."""
    from glomssl.datagan.features import load_network, save_latent, synthesize
    from glomssl.fsutil import ensure_writable_dir

    out = ensure_writable_dir(cfg.out)
    from glomssl.engine import resolve_device

    device = resolve_device(cfg.device)
    G = load_network(G if G is not None else cfg.network, device)
    names = []
    for seed in range(cfg.seed, cfg.seed + cfg.n):
        name = f"sample_{seed:06d}"
        ws = seed_latent(G, seed, cfg.trunc, device)  # (1, num_ws, w_dim)
        img, _ = synthesize(G, ws)
        save_latent(out / f"{name}.npz", ws[0], None, seed=seed, trunc=cfg.trunc)
        _save_png(out / f"{name}.png", to_uint8(img[0]))
        names.append(name)
    return {"out": str(out), "images": len(names), "resolution": int(G.img_resolution)}  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# generate: labelled pairs


@dataclass
class GenerateConfig:
    """``glomssl datagan generate`` options."""

    network: str
    labeler: str
    out: str
    n: int = 1000
    drop_uncertain: float = 0.0
    seed: int = opt(0, ge=0)
    trunc: float = opt(0.7, ge=0, le=1)
    shard: str = ""  # "i/N"; empty = from RANK/WORLD_SIZE, else 0/1
    band_mb: int = 256
    device: str = "auto"
    quiet: bool = False

    def validate(self) -> None:
        from glomssl.engine import resolve_device

        resolve_device(self.device)
        if self.n < 1:
            raise GlomsslError("--n must be at least 1")
        if not 0.0 <= self.drop_uncertain < 1.0:
            raise GlomsslError(
                "--drop-uncertain must be in [0, 1), e.g. 0.1 to drop the 10 % worst"
            )
        if self.band_mb < 1:
            raise GlomsslError("--band-mb must be at least 1")
        parse_shard(self.shard)


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/N"`` -> (i, N); empty -> the launcher's RANK/WORLD_SIZE, else (0, 1)."""
    if not text:
        return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise GlomsslError(
            f"--shard {text!r} must look like 0/4 (this shard / number of shards)"
        ) from None
    if n < 1 or not 0 <= i < n:
        raise GlomsslError(f"--shard {text!r}: need 0 <= i < N")
    return i, n


def label_image(
    feats: list[torch.Tensor],
    labeler: Any,
    resolution: int,
    band_bytes: int,
    index: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class map (H, W) int64 and pixel JS divergence (H, W) of one image, a row band at a time.

    Peak extra memory: one band buffer (<= ``band_bytes``) plus the ensemble's activations for it.
    """
    import torch

    from glomssl.datagan.features import band_features, rows_for_budget

    c_total = sum(int(f.shape[1]) for f in feats)
    rows = rows_for_budget(c_total, resolution, band_bytes)
    dev = feats[0].device
    mask = torch.empty(resolution, resolution, dtype=torch.long, device=dev)
    js = torch.empty(resolution, resolution, dtype=torch.float32, device=dev)
    buf = torch.empty(rows, resolution, c_total, dtype=torch.float32, device=dev)
    with torch.no_grad():
        for y0 in range(0, resolution, rows):
            y1 = min(resolution, y0 + rows)
            band = band_features(feats, y0, y1, (resolution, resolution), index, out=buf[: y1 - y0])
            mean, jsd = labeler.predict(band.view(-1, c_total))  # (R*W, classes), (R*W,)
            mask[y0:y1] = mean.argmax(-1).view(y1 - y0, resolution)
            js[y0:y1] = jsd.view(y1 - y0, resolution)
    return mask, js


def run_datagan_generate(
    cfg: GenerateConfig, G: nn.Module | None = None, stop_after: int | None = None
) -> dict[str, Any]:
    """Generate this shard's candidates (resuming), then finalise when all shards are done.

    ``stop_after`` stops after that many new candidates (used to test resuming after a crash).
    """
    import torch
    from tqdm import tqdm

    from glomssl.config import save_config
    from glomssl.datagan.features import feature_channels, load_network, synthesize
    from glomssl.datagan.labeler import check_compatible, load_labeler, top_decile_mean
    from glomssl.fsutil import atomic_write_text, ensure_writable_dir

    shard, nshards = parse_shard(cfg.shard)
    from glomssl.engine import resolve_device

    device = resolve_device(cfg.device)
    out = ensure_writable_dir(cfg.out)
    n_cand = math.ceil(cfg.n / (1.0 - cfg.drop_uncertain))
    plan = {"n": cfg.n, "candidates": n_cand, "seed": cfg.seed, "trunc": cfg.trunc}
    plan_file = out / "plan.json"
    if plan_file.is_file():
        old = json.loads(plan_file.read_text(encoding="utf-8"))
        if old != plan:
            raise GlomsslError(
                f"--out {out} holds a run with other settings ({old}); use a new --out folder "
                "or the same --n/--drop-uncertain/--seed/--trunc to resume"
            )
    elif shard == 0:
        atomic_write_text(plan_file, json.dumps(plan) + "\n")
        save_config(cfg, out / "config.yaml")

    G = load_network(G if G is not None else cfg.network, device)
    labeler, lmeta = load_labeler(cfg.labeler, device)
    res = int(G.img_resolution)  # type: ignore[arg-type]
    for sub in ("images", "masks", "records"):
        (out / sub).mkdir(exist_ok=True)
    seeds = [cfg.seed + i for i in range(shard, n_cand, nshards)]
    todo = [s for s in seeds if not (out / "records" / f"{s:08d}.json").is_file()]
    checked = False
    made = 0
    bar = tqdm(total=len(seeds), initial=len(seeds) - len(todo), disable=cfg.quiet, unit="img")
    for seed in todo:
        if stop_after is not None and made >= stop_after:
            break
        ws = seed_latent(G, seed, cfg.trunc, device)
        img, feats = synthesize(G, ws)
        if not checked:
            check_compatible(lmeta, feature_channels(feats), res)
            checked = True
        mask, js = label_image(feats, labeler, res, cfg.band_mb * 2**20)
        del feats
        name = f"{seed:08d}"
        _save_png(out / "images" / f"{name}.png", to_uint8(img[0]))
        _save_png(out / "masks" / f"{name}.png", mask.to(torch.uint8).cpu().numpy())
        counts = torch.bincount(mask.flatten(), minlength=labeler.num_classes).cpu()
        rec = {
            "seed": seed,
            "image": f"images/{name}.png",
            "mask": f"masks/{name}.png",
            "uncertainty": top_decile_mean(js),
            "class_fractions": [round(float(c) / (res * res), 6) for c in counts],
        }
        atomic_write_text(out / "records" / f"{name}.json", json.dumps(rec) + "\n", fsync=False)
        made += 1
        bar.update(1)
    bar.close()
    done = len(list((out / "records").glob("*.json")))
    result: dict[str, Any] = {
        "out": str(out),
        "generated": made,
        "done": done,
        "candidates": n_cand,
    }
    if done >= n_cand:
        result.update(finalize(out, cfg.n, n_cand, cfg.seed))
    return result


def finalize(out: Path, n: int, n_cand: int, seed0: int) -> dict[str, Any]:
    """Keep the ``n`` most certain candidates; write manifest.jsonl and preview.png (idempotent)."""
    from glomssl.fsutil import sha256_file
    from glomssl.manifest import write_manifest

    recs = []
    for s in range(seed0, seed0 + n_cand):
        f = out / "records" / f"{s:08d}.json"
        recs.append(json.loads(f.read_text(encoding="utf-8")))
    recs.sort(key=lambda r: (r["uncertainty"], r["seed"]))
    keep, drop = recs[:n], recs[n:]
    for r in drop:
        (out / r["image"]).unlink(missing_ok=True)
        (out / r["mask"]).unlink(missing_ok=True)
    rows = []
    for r in sorted(keep, key=lambda r: r["seed"]):
        from PIL import Image

        with Image.open(out / r["image"]) as im:
            w, h = im.size
        rows.append(
            {
                "path": r["image"],
                "sha256": sha256_file(out / r["image"]),
                "width": w,
                "height": h,
                "mask": r["mask"],
                "seed": r["seed"],
                "uncertainty": r["uncertainty"],
                "class_fractions": r["class_fractions"],
                "source": "datagan",
            }
        )
    write_manifest(out / "manifest.jsonl", rows)
    write_preview(out, rows[:8])
    worst = max((r["uncertainty"] for r in keep), default=float("nan"))
    return {"kept": len(keep), "dropped": len(drop), "max_kept_uncertainty": worst}


def write_preview(out: Path, rows: list[dict[str, Any]]) -> None:
    """preview.png: each kept image beside its mask blended over it (a fixed colour per class);
    tiles are shown at 256 px at most."""
    import numpy as np
    from PIL import Image

    if not rows:
        return
    palette = np.array(
        [[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48]]
        + [[(37 * i) % 256, (91 * i) % 256, (151 * i) % 256] for i in range(6, 256)],
        dtype=np.float32,
    )
    tiles = []
    for r in rows:
        im = Image.open(out / r["path"]).convert("RGB")
        mk: Image.Image = Image.open(out / r["mask"])
        if im.width > 256:  # keep the preview small at 512/1024 px
            im = im.resize((256, 256), Image.Resampling.BILINEAR)
            mk = mk.resize((256, 256), Image.Resampling.NEAREST)
        img = np.asarray(im, dtype=np.float32)
        mask = np.asarray(mk)
        overlay = np.where(mask[..., None] > 0, 0.5 * img + 0.5 * palette[mask], img)
        tiles.append(np.concatenate([img, overlay], axis=1))
    grid = np.concatenate(tiles, axis=0).clip(0, 255).astype(np.uint8)
    _save_png(out / "preview.png", grid)


def describe(cfg: Any) -> str:
    """The config as JSON (for ``--dry-run``)."""
    return json.dumps(dataclasses.asdict(cfg), indent=2)
