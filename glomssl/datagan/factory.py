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
from glomssl.datagan.budget import DEFAULT_BUDGET_MB, chunks, images_per_batch
from glomssl.errors import GlomsslError

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn


def seed_latent(G: nn.Module, seed: int, trunc: float, device: str = "cpu") -> torch.Tensor:
    """W+ latent (1, num_ws, w_dim) of an integer seed: z ~ N(0, I) from a seeded numpy generator."""
    return seed_latents(G, [seed], trunc, device)


def seed_latents(G: nn.Module, seeds: list[int], trunc: float, device: str = "cpu") -> torch.Tensor:
    """W+ latents (len(seeds), num_ws, w_dim), each from its own seed (independent of the batch)."""
    import numpy as np
    import torch

    z = np.stack([np.random.RandomState(s).randn(int(G.z_dim)) for s in seeds])  # type: ignore[arg-type]
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


MAX_SAMPLES = 1_000_000  # images per `datagan sample` run (as `gan generate` caps its seeds)
MAX_SEED = 2**32 - 1  # numpy's RandomState takes 32-bit seeds


def _check_seed_range(seed: int, count: int, what: str) -> None:
    if seed + count - 1 > MAX_SEED:
        raise GlomsslError(
            f"--seed {seed} with {count:,} {what} runs past the largest seed {MAX_SEED}; "
            "use a smaller --seed"
        )


@dataclass
class SampleConfig:
    """``glomssl datagan sample`` options."""

    network: str
    out: str
    n: int = opt(24, ge=1, le=MAX_SAMPLES)
    seed: int = opt(0, ge=0)
    trunc: float = opt(0.7, ge=0, le=1)
    mem_budget_mb: int = opt(DEFAULT_BUDGET_MB, ge=16)
    device: str = "cpu"

    def validate(self) -> None:
        from glomssl.engine import resolve_device

        resolve_device(self.device)
        if not 1 <= self.n <= MAX_SAMPLES:
            raise GlomsslError(
                f"--n {self.n} must lie in 1..{MAX_SAMPLES:,}; sample more in several runs with "
                "later --seed values into the same --out"
            )
        _check_seed_range(self.seed, self.n, "images")


# Latents (X.npz) record the generator they belong to: the sha256 of its weights (its tensors, so a
# copied run folder or a module built from the same snapshot is the same generator).
NETWORK_KEY = "network_sha256"


def network_sha256(G: nn.Module) -> str:
    """Identity of a loaded generator: the sha256 of its weights."""
    return _identity(G)["sha256"]


def latent_meta(path: Path) -> dict[str, Any] | None:
    """The scalar entries of a latent .npz (seed, trunc, network_sha256, ...), without loading its
    arrays; None when the file cannot be read."""
    import zipfile

    import numpy as np

    from glomssl.datagan.features import NOISE_PREFIX

    try:
        with np.load(path, allow_pickle=False) as z:
            small = [k for k in z.files if k != "ws" and not k.startswith(NOISE_PREFIX)]
            vals = {k: z[k] for k in small}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None
    return {k: v.item() for k, v in vals.items() if v.ndim == 0}


def check_latent_folder(out: Path, sha: str, network: str) -> None:
    """Refuse an annotation folder whose latents record another generator: a labeler trained on it
    would mix two generators' feature spaces (their latents have the same shapes)."""
    for npz in sorted(out.glob("*.npz")):
        meta = latent_meta(npz)
        theirs = meta.get(NETWORK_KEY) if meta else None
        if theirs is not None and theirs != sha:
            made = meta.get("network", "another generator") if meta else "another generator"
            raise GlomsslError(
                f"--out {out} holds latents of another generator ({npz.name} was made with {made}, "
                f"weights sha256 {str(theirs)[:12]}; --network {network} is {sha[:12]}); "
                "use a new --out for this --network"
            )


def _sample_todo(out: Path, seeds: list[int], trunc: float, sha: str, network: str) -> list[int]:
    """The seeds still to sample into ``out``; a sample made with other settings (another generator,
    --trunc) is refused rather than overwritten, and so is any name that has a mask beside it."""
    todo = []
    for seed in seeds:
        name = f"sample_{seed:06d}"
        png, npz, mask = out / f"{name}.png", out / f"{name}.npz", out / f"{name}_mask.png"
        if not (png.exists() or npz.exists() or mask.exists()):
            todo.append(seed)
            continue
        meta = latent_meta(npz) if npz.is_file() else None
        same = (
            meta is not None
            and meta.get(NETWORK_KEY) == sha
            and meta.get("seed") == seed
            and meta.get("trunc") is not None
            and abs(float(meta["trunc"]) - trunc) < 1e-9
        )
        if same:  # made by this very command before: keep it (remade only if its PNG is gone)
            if not png.is_file():
                todo.append(seed)
            continue
        if meta is None:
            why = (
                f"{name}.npz is missing or unreadable"
                if not npz.is_file()
                else "it records no generator"
            )
        elif meta.get(NETWORK_KEY) != sha:
            why = (
                "it was made with another --network"
                if meta.get(NETWORK_KEY)
                else "it records no generator"
            )
        else:
            why = f"it was made with --trunc {meta.get('trunc')}"
        hint = f" and {mask.name} was painted on it" if mask.exists() else ""
        raise GlomsslError(
            f"--out {out} already holds {name} ({why}){hint}; refusing to overwrite it: use a new "
            "--out, or a --seed past the samples already there"
        )
    check_latent_folder(out, sha, network)  # other names, but another generator
    return todo


def run_datagan_sample(cfg: SampleConfig, G: nn.Module | None = None) -> dict[str, Any]:
    """Write ``sample_<seed>.png`` + ``sample_<seed>.npz`` (its W+ latent) for ``n`` seeds.

    Samples already in ``cfg.out`` from this generator with the same --trunc are kept; anything
    else under a name this run would write is refused, never overwritten (painted masks stay valid).
    """
    from glomssl.datagan.features import load_network, save_latent, synthesize_images
    from glomssl.engine import resolve_device
    from glomssl.fsutil import ensure_writable_dir

    cfg.validate()
    device = resolve_device(cfg.device)
    G = load_network(G if G is not None else cfg.network, device)  # bad --network: no --out made
    sha = network_sha256(G)
    seeds = list(range(cfg.seed, cfg.seed + cfg.n))
    out_p = Path(cfg.out)
    todo = _sample_todo(out_p, seeds, cfg.trunc, sha, cfg.network) if out_p.is_dir() else seeds
    out = ensure_writable_dir(cfg.out)
    net_name = str(cfg.network) if cfg.network else f"<{type(G).__name__} object>"
    for part in chunks(todo, images_per_batch(G, cfg.mem_budget_mb)):
        ws = seed_latents(G, part, cfg.trunc, device)  # (b, num_ws, w_dim)
        img = synthesize_images(G, ws)
        for i, seed in enumerate(part):
            name = f"sample_{seed:06d}"
            save_latent(
                out / f"{name}.npz",
                ws[i],
                None,
                seed=seed,
                trunc=cfg.trunc,
                network=net_name,
                **{NETWORK_KEY: sha},
            )
            _save_png(out / f"{name}.png", to_uint8(img[i]))
    return {
        "out": str(out),
        "images": len(seeds),
        "generated": len(todo),
        "resolution": int(G.img_resolution),  # type: ignore[arg-type]
    }


# --------------------------------------------------------------------------------------------------
# generate: labelled pairs


@dataclass
class GenerateConfig:
    """``glomssl datagan generate`` options."""

    network: str
    labeler: str
    out: str
    n: int = opt(1000, ge=1)
    drop_uncertain: float = opt(0.0, ge=0, lt=1)  # e.g. 0.1 drops the 10 % most uncertain
    seed: int = opt(0, ge=0)
    trunc: float = opt(0.7, ge=0, le=1)
    shard: str = ""  # "i/N"; empty = from RANK/WORLD_SIZE, else 0/1
    band_mb: int = opt(256, ge=1)
    mem_budget_mb: int = opt(DEFAULT_BUDGET_MB, ge=16)
    device: str = "auto"
    quiet: bool = False

    def validate(self) -> None:
        from glomssl.engine import resolve_device

        resolve_device(self.device)
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


def _identity(obj: Any) -> dict[str, str]:
    """{"path", "sha256"} of a weights file, or of a module's tensors when given a built network."""
    from glomssl.fsutil import sha256_file

    if isinstance(obj, Path):
        return {"path": str(obj.resolve()), "sha256": sha256_file(obj)}
    import hashlib

    h = hashlib.sha256()
    for name, t in sorted(obj.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return {"path": f"<{type(obj).__name__} object>", "sha256": h.hexdigest()}


def _check_plan(out: Path, plan: dict[str, Any], write: bool) -> None:
    """plan.json fixes a run's settings and the exact network and labeler files; a resume or another
    shard with anything else is refused, so one --out never mixes generators (issue 10, item 8)."""
    from glomssl.fsutil import atomic_write_text

    plan_file = out / "plan.json"
    if not plan_file.is_file():
        if write:
            atomic_write_text(plan_file, json.dumps(plan, indent=1) + "\n")
        return
    try:
        old = json.loads(plan_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # ValueError: not JSON, or not UTF-8
        old = None
    if not isinstance(old, dict):
        raise GlomsslError(
            f"{plan_file} is damaged (not a JSON object), so this --out cannot be resumed safely; "
            "use a new --out folder"
        )
    settings = ("n", "candidates", "seed", "trunc")
    if {k: old.get(k) for k in settings} != {k: plan[k] for k in settings}:
        theirs = {k: old.get(k) for k in settings}
        raise GlomsslError(
            f"--out {out} holds a run with other settings ({theirs}); use a new --out folder "
            "or the same --n/--drop-uncertain/--seed/--trunc to resume"
        )
    for key, flag in (("network", "--network"), ("labeler", "--labeler")):
        if key not in old:  # a plan from before identities were recorded: adopt this run's
            continue
        if old[key]["sha256"] != plan[key]["sha256"]:
            raise GlomsslError(
                f"--out {out} was started with {flag} {old[key]['path']} (sha256 "
                f"{old[key]['sha256'][:12]}); this run has {plan[key]['path']} (sha256 "
                f"{plan[key]['sha256'][:12]}); use a new --out or the same {flag} file"
            )
    if write and any(k not in old for k in ("network", "labeler")):
        atomic_write_text(plan_file, json.dumps({**old, **plan}, indent=1) + "\n")


def run_datagan_generate(
    cfg: GenerateConfig, G: nn.Module | None = None, stop_after: int | None = None
) -> dict[str, Any]:
    """Generate this shard's candidates (resuming), then finalise when all shards are done.

    Images are synthesised in batches that fit ``mem_budget_mb`` (with their features, which stay
    until each image is labelled) and labelled one at a time in row bands of ``band_mb``.
    ``stop_after`` stops after that many new candidates (used to test resuming after a crash).
    """
    import torch

    from glomssl.config import save_config
    from glomssl.datagan.features import feature_channels, load_network, synthesize
    from glomssl.datagan.labeler import (
        WEIGHTS_NAME,
        check_compatible,
        load_labeler,
        top_decile_mean,
    )
    from glomssl.datagan.progress import Progress
    from glomssl.datagan.snapshot import resolve_snapshot
    from glomssl.fsutil import atomic_write_text, ensure_writable_dir

    shard, nshards = parse_shard(cfg.shard)
    from glomssl.engine import resolve_device

    device = resolve_device(cfg.device)
    n_cand = math.ceil(cfg.n / (1.0 - cfg.drop_uncertain))
    _check_seed_range(cfg.seed, n_cand, "candidates")
    if G is None and not Path(cfg.network).exists():
        raise GlomsslError(
            f"--network {cfg.network} does not exist; pass a `glomssl gan train` run folder or "
            "snapshot"
        )
    # every input is checked and loaded before --out is created (a refused run leaves no folder)
    labeler, lmeta = load_labeler(cfg.labeler, device)
    lab_path = Path(cfg.labeler)
    plan = {
        "n": cfg.n,
        "candidates": n_cand,
        "seed": cfg.seed,
        "trunc": cfg.trunc,
        "network": _identity(G if G is not None else resolve_snapshot(cfg.network)),
        "labeler": _identity(lab_path / WEIGHTS_NAME if lab_path.is_dir() else lab_path),
    }
    if Path(cfg.out).is_dir():
        _check_plan(Path(cfg.out), plan, write=False)
    G = load_network(G if G is not None else cfg.network, device)
    res = int(G.img_resolution)  # type: ignore[arg-type]
    if int(lmeta.get("resolution", res)) != res:
        check_compatible(lmeta, list(lmeta.get("channels", [])), res)  # the one-line error
    trained_on = lmeta.get("generator_sha256")  # recorded since labelers record their generator
    if trained_on is not None and trained_on != network_sha256(G):
        raise GlomsslError(
            f"--labeler {cfg.labeler} was trained on another generator ({lmeta.get('network')}, "
            f"weights sha256 {str(trained_on)[:12]}) than --network {cfg.network}; retrain it "
            "with this --network or pass the labeler trained on it"
        )
    out = ensure_writable_dir(cfg.out)
    _check_plan(out, plan, write=shard == 0)
    if shard == 0 and not (out / "config.yaml").is_file():
        save_config(cfg, out / "config.yaml")

    for sub in ("images", "masks", "records"):
        (out / sub).mkdir(exist_ok=True)
    seeds = [cfg.seed + i for i in range(shard, n_cand, nshards)]
    # a missing or damaged record (a crash, a bad copy) is made again
    todo = [s for s in seeds if _read_record(out / "records" / f"{s:08d}.json") is None]
    if stop_after is not None:
        todo = todo[:stop_after]
    checked = False
    made = 0
    bar = Progress("datagan generate", len(seeds), len(seeds) - len(todo), cfg.quiet)
    for part in chunks(todo, images_per_batch(G, cfg.mem_budget_mb, features=True)):
        img, feats = synthesize(G, seed_latents(G, part, cfg.trunc, device))
        if not checked:
            check_compatible(lmeta, feature_channels(feats), res)
            checked = True
        for i, seed in enumerate(part):
            mask, js = label_image(feats, labeler, res, cfg.band_mb * 2**20, index=i)
            name = f"{seed:08d}"
            _save_png(out / "images" / f"{name}.png", to_uint8(img[i]))
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
        del feats, img
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


def _read_record(path: Path) -> dict[str, Any] | None:
    """A candidate's ``records/<seed>.json``, or None when it is missing or damaged."""
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # ValueError: not JSON, or not UTF-8
        return None
    keys = ("seed", "image", "mask", "uncertainty")
    return rec if isinstance(rec, dict) and all(k in rec for k in keys) else None


def finalize(out: Path, n: int, n_cand: int, seed0: int) -> dict[str, Any]:
    """Keep the ``n`` most certain candidates; write manifest.jsonl and preview.png (idempotent)."""
    from glomssl.fsutil import sha256_file
    from glomssl.manifest import write_manifest

    recs = []
    for s in range(seed0, seed0 + n_cand):
        f = out / "records" / f"{s:08d}.json"
        rec = _read_record(f)
        if rec is None:  # damaged since this shard checked it (another shard's run)
            raise GlomsslError(f"{f} is damaged; run the same command again to make it anew")
        recs.append(rec)
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


PREVIEW_TILE = 256  # px per image tile in preview.png (small images are enlarged to it)


def write_preview(out: Path, rows: list[dict[str, Any]]) -> None:
    """preview.png: each kept image beside its mask blended over it (a fixed colour per class), as
    256 px tiles: larger images shrink (Lanczos), smaller ones grow; masks always by nearest
    neighbour, so class boundaries stay crisp."""
    import numpy as np
    from PIL import Image

    if not rows:
        return
    palette = np.array(
        [[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48]]
        + [[(37 * i) % 256, (91 * i) % 256, (151 * i) % 256] for i in range(6, 256)],
        dtype=np.float32,
    )
    t = PREVIEW_TILE
    tiles = []
    for r in rows:
        with Image.open(out / r["path"]) as im0, Image.open(out / r["mask"]) as mk0:
            im = im0.convert("RGB")
            mk = mk0.copy()
        if im.size != (t, t):
            grow = im.width < t
            im = im.resize((t, t), Image.Resampling.NEAREST if grow else Image.Resampling.LANCZOS)
        if mk.size != (t, t):
            mk = mk.resize((t, t), Image.Resampling.NEAREST)
        img = np.asarray(im, dtype=np.float32)
        mask = np.asarray(mk)
        overlay = np.where(mask[..., None] > 0, 0.5 * img + 0.5 * palette[mask], img)
        tiles.append(np.concatenate([img, overlay], axis=1))
    grid = np.concatenate(tiles, axis=0).clip(0, 255).astype(np.uint8)
    _save_png(out / "preview.png", grid)


def describe(cfg: Any) -> str:
    """The config as JSON (for ``--dry-run``)."""
    return json.dumps(dataclasses.asdict(cfg), indent=2)
