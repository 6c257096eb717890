"""GAN snapshots on disk: one safetensors file with G, D, G_ema (and optimiser moments) plus a JSON
sidecar with the networks' constructor arguments, ADA state, progress and the training config.

Layout of ``RUN/snapshot-<kimg>.safetensors``: tensors ``G.<param>``, ``D.<param>``, ``G_ema.<param>``,
``augment_p`` (0-d), and for resumable training ``opt_G.<i>.<moment>`` / ``opt_D.<i>.<moment>`` (Adam
state of parameter i). The sidecar ``RUN/snapshot-<kimg>.json`` holds ``G_kwargs``, ``D_kwargs``,
``cur_nimg``, ``kimg``, ``augment_p`` and ``config``. Nothing is unpickled: loading only rebuilds the
networks from keyword arguments and copies tensors in.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import torch

from glomssl.datagan.networks import Discriminator, Generator
from glomssl.errors import GlomsslError
from glomssl.runs import load_weights, save_weights

SNAPSHOT_RE = re.compile(r"^snapshot-(\d+)\.safetensors$")
FORMAT = "glomssl-gan-snapshot-v1"


def snapshot_name(cur_nimg: int) -> str:
    """File name for a snapshot taken after ``cur_nimg`` real images (kimg, zero padded)."""
    return f"snapshot-{cur_nimg // 1000:06d}.safetensors"


def list_snapshots(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Snapshots in a run folder, oldest first (by kimg in the name)."""
    d = Path(run_dir)
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := SNAPSHOT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def is_complete(snapshot: Path) -> bool:
    """True when a snapshot's JSON sidecar exists and is ours (weights alone, left by a crash
    between writing the two files, are not a snapshot)."""
    from glomssl.runs import sidecar_path

    side = sidecar_path(snapshot)
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("format") == FORMAT


def _warn(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr, flush=True)


def resolve_snapshot(path_or_run_dir: str | os.PathLike[str]) -> Path:
    """A snapshot file, or the newest complete snapshot of a run folder; one-line errors otherwise."""
    p = Path(path_or_run_dir)
    if p.is_dir():
        snaps = list_snapshots(p)
        if not snaps:
            raise GlomsslError(
                f"run folder {p} holds no snapshot-*.safetensors; train with `glomssl gan train` "
                "first or pass a snapshot file"
            )
        for snap in reversed(snaps):
            if is_complete(snap):
                if snap != snaps[-1]:
                    _warn(f"{snaps[-1].name} in {p} is incomplete (no sidecar); using {snap.name}")
                return snap
        raise GlomsslError(
            f"run folder {p} holds no complete snapshot (every .safetensors lacks its .json "
            "sidecar); resume training or pass a snapshot written by `glomssl gan train`"
        )
    if p.is_file():
        return p
    raise GlomsslError(f"--network {p} does not exist; pass a gan run folder or a snapshot file")


def _optimizer_tensors(prefix: str, opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for idx, st in opt.state_dict()["state"].items():
        for key, val in st.items():
            t = val if isinstance(val, torch.Tensor) else torch.tensor(float(val))
            out[f"{prefix}.{idx}.{key}"] = t
    return out


def save_snapshot(
    path: str | os.PathLike[str],
    G: Generator,
    D: Discriminator,
    G_ema: Generator,
    augment_p: float,
    cur_nimg: int,
    config: dict[str, Any] | None = None,
    opt_G: torch.optim.Optimizer | None = None,
    opt_D: torch.optim.Optimizer | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a snapshot (safetensors + JSON sidecar), atomically."""
    tensors: dict[str, torch.Tensor] = {}
    for name, net in (("G", G), ("D", D), ("G_ema", G_ema)):
        for k, v in net.state_dict().items():
            tensors[f"{name}.{k}"] = v
    tensors["augment_p"] = torch.tensor(float(augment_p))
    if opt_G is not None:
        tensors.update(_optimizer_tensors("opt_G", opt_G))
    if opt_D is not None:
        tensors.update(_optimizer_tensors("opt_D", opt_D))
    meta: dict[str, Any] = {
        "format": FORMAT,
        "G_kwargs": G.init_kwargs,
        "D_kwargs": D.init_kwargs,
        "cur_nimg": int(cur_nimg),
        "kimg": cur_nimg / 1000.0,
        "augment_p": float(augment_p),
        "config": config or {},
    }
    meta.update(extra or {})
    return save_weights(path, tensors, meta, kind="gan-snapshot")


def _load_state(net: torch.nn.Module, prefix: str, tensors: dict[str, Any], src: Path) -> None:
    sd = {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise GlomsslError(
            f"{src}: {prefix} weights do not match its recorded config ({first})"
        ) from exc


def load_optimizer_state(opt: torch.optim.Optimizer, prefix: str, tensors: dict[str, Any]) -> bool:
    """Restore Adam moments saved by :func:`save_snapshot`; False when the snapshot has none."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith(prefix + "."):
            _, idx, key = k.split(".", 2)
            state.setdefault(int(idx), {})[key] = v
    if not state:
        return False
    sd = opt.state_dict()
    sd["state"] = state
    opt.load_state_dict(sd)
    return True


def load_snapshot(path_or_run_dir: str | os.PathLike[str], device: str = "cpu") -> dict[str, Any]:
    """Load a snapshot (or a run folder's latest) -> {"G", "D", "G_ema", "augment_p", "meta",
    "path", "tensors"}; networks on ``device``, G and D in train mode, G_ema in eval mode."""
    src = resolve_snapshot(path_or_run_dir)
    tensors, meta = load_weights(src, expect="gan-snapshot")
    if meta.get("format") != FORMAT or "G_kwargs" not in meta:
        raise GlomsslError(
            f"{src} is not a glomssl GAN snapshot (its .json sidecar is missing or foreign); "
            "pass a snapshot written by `glomssl gan train`"
        )
    G = Generator(**meta["G_kwargs"])
    G_ema = Generator(**meta["G_kwargs"])
    D = Discriminator(**meta["D_kwargs"])
    _load_state(G, "G", tensors, src)
    _load_state(G_ema, "G_ema", tensors, src)
    _load_state(D, "D", tensors, src)
    G_ema.eval().requires_grad_(False)
    p = tensors.get("augment_p")
    return {
        "G": G.to(device),
        "D": D.to(device),
        "G_ema": G_ema.to(device),
        "augment_p": float(p.item()) if p is not None else float(meta.get("augment_p", 0.0)),
        "meta": meta,
        "path": src,
        "tensors": tensors,
    }


def latest_complete_snapshot(
    run_dir: str | os.PathLike[str], device: str = "cpu", warn: bool = True
) -> dict[str, Any]:
    """Load the newest snapshot of a run folder that loads; newer ones that do not (a crash while
    writing them) are skipped with a warning, so ``--resume`` continues from the last good one."""
    snaps = list_snapshots(run_dir)
    problems = []
    for path in reversed(snaps):
        try:
            snap = load_snapshot(path, device)
        except GlomsslError as exc:
            problems.append(f"{path.name} ({str(exc).split(';')[0]})")
            continue
        if problems and warn:
            _warn(f"skipping incomplete snapshot(s) {', '.join(problems)}; resuming {path.name}")
        return snap
    raise GlomsslError(
        f"run folder {run_dir} holds no loadable snapshot ({'; '.join(problems) or 'none'}); "
        "start a new --out"
    )


def load_generator(
    path_or_run_dir: str | os.PathLike[str], device: str = "cpu"
) -> tuple[Generator, dict[str, Any]]:
    """The exponential-moving-average generator of a snapshot, in eval mode, and its meta."""
    snap = load_snapshot(path_or_run_dir, device)
    meta = dict(snap["meta"])
    meta["snapshot"] = str(snap["path"])
    return snap["G_ema"], meta
