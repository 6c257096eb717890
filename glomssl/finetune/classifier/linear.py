"""Images in memory, frozen features, and the linear protocol (a frozen backbone + one linear layer).

Glo-In-One's linear protocol trains only the layer after global pooling. With a frozen trunk and no
augmentation (the paper only resizes its crops for this protocol) each image has exactly one feature
vector, so the trunk runs once per image (:func:`cached_features`, stored in ``RUN/features.npz`` and
reused by every fold and by ``--resume``) and each fold trains the layer on those vectors alone: seconds
on a CPU instead of hours.

:func:`fit_linear` standardises the features with the training part's mean and std, trains the layer
with Adam and the focal loss, keeps the epoch with the best validation balanced accuracy (ties: lower
validation loss), and folds the standardisation back into the layer, so the exported classifier is the
plain network ``head(trunk(x))``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glomssl.errors import GlomsslError


def load_images(
    paths: Sequence[Path], size: int, workers: int = 2, quiet: bool = False
) -> torch.Tensor:
    """Decode and resize every image once: uint8 (N, 3, size, size), in order (threads decode)."""
    from concurrent.futures import ThreadPoolExecutor

    from glomssl.engine import progress_line
    from glomssl.finetune.classifier.model import prepare

    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    t0 = time.perf_counter()
    step = max(1, len(paths) // 10)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for i, x in enumerate(pool.map(lambda p: prepare(p, size), paths)):
            out[i] = x
            if not quiet and ((i + 1) % step == 0 or i + 1 == len(paths)):
                print(progress_line("load images", i + 1, len(paths), t0), file=sys.stderr)
    return out


@torch.no_grad()
def embed(
    model: Any, images: torch.Tensor, batch_size: int = 128, device: str = "cpu"
) -> np.ndarray:
    """Pooled trunk features of uint8 images (N, 3, S, S) -> float32 (N, D), eval mode."""
    model.eval()
    feats = []
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size].to(device).float().div_(255)  # (B, 3, S, S)
        feats.append(model.features(x).float().cpu().numpy())  # (B, D)
    return np.concatenate(feats).astype(np.float32)


def features_key(backbone: str | None, size: int, paths: Sequence[Path]) -> str:
    """Identity of a feature cache: the backbone file's bytes, the image size and the image list."""
    from glomssl.fsutil import sha256_file

    h = hashlib.sha256()
    h.update((sha256_file(backbone) if backbone else "random").encode())
    h.update(str(size).encode())
    for p in paths:
        h.update(str(p).encode())
    return h.hexdigest()


def cached_features(
    path: Path, key: str, compute: Callable[[], np.ndarray]
) -> tuple[np.ndarray, bool]:
    """``path`` (npz) when it holds features for ``key``, else ``compute()`` saved there atomically."""
    from glomssl.fsutil import atomic_open

    if path.is_file():
        with contextlib.suppress(OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            # unreadable or stale: recompute
            with np.load(path, allow_pickle=False) as data:
                if str(data["key"]) == key:
                    return np.asarray(data["features"], dtype=np.float32), True
    feats = compute()
    with atomic_open(path, "wb") as fh:
        np.savez(fh, features=feats, key=np.asarray(key))
    return feats, False


@dataclass
class LinearFit:
    weight: np.ndarray  # (C, D), acting on raw (unstandardised) features
    bias: np.ndarray  # (C,)
    best_epoch: int
    val: dict[str, Any]  # metrics of the best epoch on the validation part
    history: list[dict[str, float]]


def _val_score(head: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, gamma: float, w: Any):
    from glomssl.finetune.classifier.loss import focal_loss
    from glomssl.finetune.classifier.metrics import balanced_accuracy, confusion

    with torch.no_grad():
        logits = head(x)
        loss = float(focal_loss(logits, y, gamma, w))
        cm = confusion(y.numpy(), logits.argmax(1).numpy(), logits.shape[1])
    return balanced_accuracy(cm), loss, torch.softmax(logits, 1).numpy()


def fit_linear(
    x_tr: np.ndarray,
    y_tr: np.ndarray,
    x_va: np.ndarray,
    y_va: np.ndarray,
    num_classes: int,
    *,
    epochs: int = 100,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    batch_size: int = 64,
    gamma: float = 2.5,
    class_weight: torch.Tensor | None = None,
    seed: int = 0,
    log: Callable[[dict[str, Any]], None] | None = None,
) -> LinearFit:
    """Train one linear layer on features; best epoch by validation balanced accuracy."""
    from glomssl.finetune.classifier.loss import focal_loss
    from glomssl.finetune.classifier.metrics import evaluate

    mu = x_tr.mean(axis=0)
    sd = x_tr.std(axis=0) + 1e-6
    xt = torch.from_numpy((x_tr - mu) / sd).float()  # (N, D) standardised
    yt = torch.from_numpy(y_tr).long()
    xv = torch.from_numpy((x_va - mu) / sd).float()
    yv = torch.from_numpy(y_va).long()
    gen = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(xt.shape[1], num_classes)
    with torch.no_grad():  # seeded init (independent of the global RNG)
        bound = 1 / np.sqrt(xt.shape[1])
        head.weight.uniform_(-bound, bound, generator=gen)
        head.bias.uniform_(-bound, bound, generator=gen)
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    best: tuple[float, float] | None = None
    best_state: dict[str, torch.Tensor] = {}
    best_epoch, history = 0, []
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for i in range(0, len(xt), batch_size):
            idx = order[i : i + batch_size]
            loss = focal_loss(head(xt[idx]), yt[idx], gamma, class_weight)
            if not torch.isfinite(loss):
                raise GlomsslError(
                    f"linear training diverged (loss {float(loss)}) at epoch {epoch}; lower --lr"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        bal, vloss, _ = _val_score(head, xv, yv, gamma, class_weight)
        row = {"epoch": epoch, "train_loss": total / len(xt), "val_loss": vloss, "val_bal": bal}
        history.append(row)
        if log is not None:
            log(row)
        score = (bal, -vloss)
        if best is None or score > best:
            best, best_epoch = score, epoch
            best_state = {k: v.detach().clone() for k, v in head.state_dict().items()}
    head.load_state_dict(best_state)
    _, _, prob = _val_score(head, xv, yv, gamma, class_weight)
    w = head.weight.detach().numpy().astype(np.float64) / sd  # (C, D) on raw features
    b = head.bias.detach().numpy().astype(np.float64) - w @ mu
    return LinearFit(
        w.astype(np.float32), b.astype(np.float32), best_epoch, evaluate(y_va, prob), history
    )


def linear_probs(fit: LinearFit, x: np.ndarray) -> np.ndarray:
    """Softmax probabilities (N, C) of a fitted layer on raw features (N, D)."""
    logits = x.astype(np.float64) @ fit.weight.T.astype(np.float64) + fit.bias  # (N, C)
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    from glomssl.fsutil import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=2, default=float) + "\n")
