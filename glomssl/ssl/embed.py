"""``glomssl embed``: images -> pooled encoder features, in input order, saved as ``.npz``.

The encoder comes from :func:`glomssl.models.encoder.load_backbone` (re-exported here for callers that
imported it from this module before the models layer existed).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from glomssl.config import opt
from glomssl.errors import GlomsslError
from glomssl.models.encoder import Encoder, load_backbone, resolve_weights

__all__ = ["EmbedConfig", "Encoder", "load_backbone", "resolve_weights", "run_embed"]


@dataclass
class EmbedConfig:
    """Options of ``glomssl embed``."""

    checkpoint: str = ""
    input: str = ""
    out: str = ""
    image_size: int | None = opt(None, ge=32, le=2048)
    batch_size: int = opt(64, ge=1)
    workers: int = opt(2, ge=0)
    device: str = "auto"
    layers: list[int] | None = None
    faiss_index: str | None = None
    quiet: bool = False

    def validate(self) -> None:
        from glomssl.engine import resolve_device

        resolve_device(self.device)
        if not self.out.endswith(".npz"):
            raise GlomsslError(f"--out {self.out!r} must end with .npz")
        if self.batch_size < 1:
            raise GlomsslError("--batch-size must be at least 1")
        if self.image_size is not None and self.image_size < 32:
            raise GlomsslError(f"--image-size {self.image_size} is too small; use at least 32")


class _EvalImages(torch.utils.data.Dataset):
    def __init__(self, paths: list[Path], size: int) -> None:
        from glomssl.ssl.transforms import eval_transform

        self.paths = paths
        self.size = size
        self.tf = eval_transform(size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, bool]:
        from glomssl.ssl.data import load_rgb_tensor

        try:
            img = load_rgb_tensor(self.paths[i]).float().div_(255)
            return self.tf(img), True
        except Exception:  # unreadable: a zero image, flagged so its row is reported, not embedded
            return torch.zeros(3, self.size, self.size), False


@torch.no_grad()
def embed_paths(
    encoder: nn.Module,
    paths: list[Path],
    image_size: int,
    batch_size: int = 64,
    workers: int = 0,
    device: str = "cpu",
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Embed images in order; returns (embeddings (N, D) float32, ok mask (N,) bool)."""
    from tqdm import tqdm

    loader = torch.utils.data.DataLoader(
        _EvalImages(paths, image_size), batch_size=batch_size, num_workers=workers, shuffle=False
    )
    feats, oks = [], []
    for x, ok in tqdm(loader, disable=not progress, desc="embed", unit="batch"):
        feats.append(encoder(x.to(device)).float().cpu().numpy())  # (B, D)
        oks.append(ok.numpy())
    return np.concatenate(feats).astype(np.float32), np.concatenate(oks).astype(bool)


#: how a PyTorch / Lightning checkpoint starts: a zip archive (torch.save) or a raw pickle
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")


def _check_checkpoint(checkpoint: str) -> None:
    """Refuse a PyTorch / Lightning checkpoint given as ``--checkpoint``: embed reads the exported
    ``backbone.safetensors`` (a run folder or that file), never a pickle."""
    p = Path(checkpoint)
    if not p.is_file():
        return  # a run folder, or a missing path (load_backbone says which)
    try:
        with open(p, "rb") as fh:
            head = fh.read(9)
        size = p.stat().st_size
    except OSError:
        return
    # safetensors: an 8-byte little-endian header length, then the JSON header
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= size - 8:
        return
    if not (p.suffix.lower() in (".ckpt", ".pt", ".pth") or head.startswith(_TORCH_MAGIC)):
        return
    run = p.parent.parent if p.parent.name == "checkpoints" else None
    if run is not None and (run / "backbone.safetensors").is_file():
        fix = f"pass the run folder {run} or its backbone.safetensors"
    else:
        fix = "pass a `glomssl pretrain` run folder or its backbone.safetensors"
    raise GlomsslError(
        f"--checkpoint {p} is a PyTorch/Lightning checkpoint, not exported encoder weights; {fix}"
    )


def _image_list(source: str) -> list[tuple[Path, dict[str, Any]]]:
    """``--input`` as (image path, row) pairs: a FOLDER or a JSONL MANIFEST, never one image or a CSV."""
    from glomssl.manifest import load_image_list

    p = Path(source)
    if p.is_file() and p.suffix.lower() in (".csv", ".tsv"):
        raise GlomsslError(
            f"--input {p} is a CSV; embed takes a folder of images or a JSONL manifest "
            '(one {"path": ...} per line), not a CSV: pass the folder that holds the images'
        )
    return load_image_list(p, "--input")  # one picture: a one-line error there


def run_embed(cfg: EmbedConfig) -> dict[str, Any]:
    """Embed every image of ``cfg.input`` (FOLDER or MANIFEST) and write ``paths`` + ``embeddings``."""
    import sys

    from glomssl.engine import resolve_device
    from glomssl.fsutil import atomic_open, ensure_writable_dir

    cfg.validate()
    device = resolve_device(cfg.device)
    # every input is checked before anything is written
    _check_checkpoint(cfg.checkpoint)
    layers = tuple(cfg.layers) if cfg.layers else (4,)
    encoder, meta = load_backbone(cfg.checkpoint, device=device, layers=layers)
    items = _image_list(cfg.input)
    ensure_writable_dir(Path(cfg.out).absolute().parent, "--out's folder")
    if cfg.faiss_index:
        ensure_writable_dir(Path(cfg.faiss_index).absolute().parent, "--faiss-index's folder")
    size = cfg.image_size or int(meta.get("image_size", 224))
    files = [p for p, _ in items]
    names = [str(r["path"]) for _, r in items]
    progress = not cfg.quiet and sys.stderr.isatty()
    emb, ok = embed_paths(encoder, files, size, cfg.batch_size, cfg.workers, device, progress)
    if not np.isfinite(emb[np.asarray(ok, bool)]).all():
        raise GlomsslError(
            f"the encoder {cfg.checkpoint} gives NaN or infinite embeddings (a diverged run?); "
            "pretrain again with a lower --lr"
        )
    failed = [n for n, good in zip(names, ok, strict=True) if not good]
    keep = np.flatnonzero(ok)
    with atomic_open(cfg.out, "wb") as fh:
        np.savez(fh, paths=np.asarray([names[i] for i in keep]), embeddings=emb[keep])
    if cfg.faiss_index:
        import faiss

        index = faiss.IndexFlatIP(emb.shape[1])
        normed = emb[keep] / np.maximum(np.linalg.norm(emb[keep], axis=1, keepdims=True), 1e-12)
        index.add(np.ascontiguousarray(normed, dtype=np.float32))
        tmp = f"{cfg.faiss_index}.tmp"
        faiss.write_index(index, tmp)
        os.replace(tmp, cfg.faiss_index)
    return {
        "out": cfg.out,
        "n": int(len(keep)),
        "dim": int(emb.shape[1]),
        "skipped": failed,
        "image_size": size,
    }
