"""The datasetGAN pixel labeler: an ensemble of K small MLPs over per-pixel generator features.

DatasetGAN (Zhang et al., CVPR 2021, Sec. 3.2) classifies every pixel's concatenated synthesis features
with an ensemble of small MLPs (two hidden layers, ReLU + BatchNorm) and ranks generated images by the
Jensen-Shannon divergence between the members' predictions to drop the uncertain ones.

Training never holds a full feature tensor of any image, let alone all of them: in each *round* every
annotated latent is re-synthesised (native activations only), a fresh random set of its pixels is
turned into feature vectors by point-wise bilinear interpolation (:func:`features.point_features`),
and the pooled pixels (capped at ``pool_mb``) train every member for ``epochs`` passes. Rounds repeat
with new pixels, so the members see many more pixels than fit in memory at once.

Weights: ``LABELER/labeler.safetensors`` (all members + the feature standardisation) and
``LABELER/labeler.json`` (K, widths, classes, the generator's feature layout), via glomssl.runs.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from glomssl.config import opt
from glomssl.errors import GlomsslError

if TYPE_CHECKING:
    import torch
    from torch import nn

WEIGHTS_NAME = "labeler.safetensors"
IGNORE = 255  # mask value for "not annotated" pixels


# --------------------------------------------------------------------------------------------------
# The annotation folder: X.png (image), X.npz (its latent, written by the tool), X_mask.png (class ids)


@dataclass
class Annotation:
    """One annotated image: its name, latent (loaded) and mask path."""

    name: str
    image: Path
    mask: Path
    latent: dict[str, Any]


def read_mask(path: str | os.PathLike[str], resolution: int, num_classes: int) -> Any:
    """Read a class-id mask (H, W) uint8; pixel value = class id, 255 = unlabelled.

    Accepts 8-bit grey ("L"), palette ("P": the palette index is the class id), 16/32-bit grey, and
    RGB(A) masks whose channels are equal, which is what painting tools save.
    """
    import numpy as np
    from PIL import Image

    p = Path(path)
    try:
        with Image.open(p) as im:
            mode = im.mode
            arr = np.asarray(im)
    except (OSError, ValueError) as exc:
        raise GlomsslError(f"mask {p} is not a readable image ({exc}); re-save it as PNG") from exc
    if arr.ndim == 3:
        rgb = arr[..., :3]
        if not ((rgb == rgb[..., :1]).all()):
            raise GlomsslError(
                f"mask {p} is a colour image ({mode}); save it as greyscale or palette PNG whose "
                "pixel values are the class ids"
            )
        arr = rgb[..., 0]
    if arr.shape != (resolution, resolution):
        raise GlomsslError(
            f"mask {p} is {arr.shape[1]}x{arr.shape[0]} but the generator makes "
            f"{resolution}x{resolution} images; paint the mask on the image of the same name"
        )
    arr = arr.astype(np.int64)
    bad = arr[(arr != IGNORE) & ((arr < 0) | (arr >= num_classes))]
    if bad.size:
        raise GlomsslError(
            f"mask {p} holds class id {int(bad.max())} but --num-classes is {num_classes}; use ids "
            f"0..{num_classes - 1} (255 = unlabelled) or raise --num-classes"
        )
    return arr.astype(np.uint8)


def scan_annotations(
    folder: str | os.PathLike[str], num_classes: int, resolution: int, G: nn.Module | None = None
) -> list[Annotation]:
    """Find every ``X.png`` + ``X_mask.png`` + ``X.npz`` triple in ``folder`` (not recursive).

    Images without a mask are not annotated yet and are skipped; a mask without its latent, a latent
    of another network, a mask of the wrong size or a class id >= ``num_classes`` is a one-line error.
    """
    from glomssl.datagan.features import load_latent

    root = Path(folder)
    if not root.is_dir():
        raise GlomsslError(
            f"--annotations {root} is not a folder; pass the folder `datagan sample` wrote"
        )
    items: list[Annotation] = []
    for mask in sorted(root.glob("*_mask.png")):
        name = mask.name[: -len("_mask.png")]
        latent = root / f"{name}.npz"
        if not latent.is_file():
            raise GlomsslError(
                f"mask {mask} has no latent {latent.name}; annotate only images written by "
                "`glomssl datagan sample` or `datagan project` (they save X.npz beside X.png)"
            )
        read_mask(mask, resolution, num_classes)  # validate now, before any training
        items.append(Annotation(name, root / f"{name}.png", mask, load_latent(latent, G)))
    if not items:
        raise GlomsslError(
            f"--annotations {root} holds no X_mask.png files; paint a mask for some sampled X.png "
            "(pixel value = class id) and save it as X_mask.png beside it"
        )
    return items


def _mlp(in_dim: int, num_classes: int, hidden: list[int]) -> nn.Module:
    """One member: Linear -> ReLU -> BatchNorm per hidden width, then a linear classifier."""
    from torch import nn

    layers: list[nn.Module] = []
    d = in_dim
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU(), nn.BatchNorm1d(h)]
        d = h
    layers.append(nn.Linear(d, num_classes))
    return nn.Sequential(*layers)


def _ensemble_cls() -> type:
    """Build the nn.Module subclass lazily so importing this module does not import torch."""
    import torch
    from torch import nn

    class LabelerEnsemble(nn.Module):
        """K pixel MLPs sharing one input standardisation; ``forward`` gives (K, N, C) logits."""

        def __init__(
            self,
            in_dim: int,
            num_classes: int,
            k: int = 10,
            hidden: list[int] | None = None,
        ) -> None:
            super().__init__()
            self.in_dim = in_dim
            self.num_classes = num_classes
            self.k = k
            self.hidden = list(hidden or [128, 32])
            self.members = nn.ModuleList([_mlp(in_dim, num_classes, self.hidden) for _ in range(k)])
            self.register_buffer("feat_mean", torch.zeros(in_dim))
            self.register_buffer("feat_std", torch.ones(in_dim))

        def normalise(self, x: torch.Tensor) -> torch.Tensor:
            mean: torch.Tensor = self.feat_mean  # type: ignore[assignment]
            std: torch.Tensor = self.feat_std  # type: ignore[assignment]
            return (x - mean) / std  # (N, C_total)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            z = self.normalise(x)
            return torch.stack([m(z) for m in self.members])  # (K, N, classes)

        def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """Ensemble-mean class probabilities (N, classes) and per-pixel JS divergence (N,).

            The members' first layers (the C_total x hidden matmuls, ~all of the cost) run as one
            stacked GEMM so the feature band is read once instead of K times, and the input
            standardisation is folded into that GEMM's weights (W' = W / std, b' = b - W' mean), so
            no standardised copy of the band is ever allocated; eval mode only.
            """
            import torch.nn.functional as F

            members: list[Any] = list(self.members)
            firsts = [m[0] for m in members]
            mean: torch.Tensor = self.feat_mean  # type: ignore[assignment]
            std: torch.Tensor = self.feat_std  # type: ignore[assignment]
            w = torch.cat([f.weight for f in firsts]) / std  # (K * h0, C_total)
            b = torch.cat([f.bias for f in firsts]) - w @ mean  # (K * h0,)
            h = F.linear(x, w, b).split(self.hidden[0], dim=1)  # K x (N, h0)
            probs = torch.stack(
                [m[1:](hk).softmax(-1) for m, hk in zip(members, h)]
            )  # (K, N, classes)
            return probs.mean(0), js_divergence(probs)

    return LabelerEnsemble


def make_labeler(
    in_dim: int, num_classes: int, k: int = 10, hidden: list[int] | None = None
) -> Any:
    """A fresh :class:`LabelerEnsemble`."""
    return _ensemble_cls()(in_dim, num_classes, k, hidden)


def js_divergence(probs: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Generalised Jensen-Shannon divergence of K distributions (K, N, C) -> (N,), in nats.

    JS(p_1..p_K) = H(mean_k p_k) - mean_k H(p_k): zero when all members agree, up to log K or log C.
    """
    mean = probs.mean(0)  # (N, C)
    h_mean = -(mean * (mean + eps).log()).sum(-1)
    h_each = -(probs * (probs + eps).log()).sum(-1).mean(0)
    return (h_mean - h_each).clamp(min=0.0)


def save_labeler(model: Any, out: str | os.PathLike[str], meta: dict[str, Any]) -> Path:
    """Write ``out/labeler.safetensors`` + ``labeler.json`` (architecture and feature layout)."""
    from glomssl.runs import save_weights

    info = {
        "kind": "datagan-labeler",
        "in_dim": model.in_dim,
        "num_classes": model.num_classes,
        "k": model.k,
        "hidden": model.hidden,
    }
    info.update(meta)
    return save_weights(Path(out) / WEIGHTS_NAME, model.state_dict(), info, kind="datagan-labeler")


def load_labeler(path: str | os.PathLike[str], device: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """Load a labeler folder (or its .safetensors file) in eval mode; clear errors for wrong input."""
    from glomssl.runs import load_weights

    p = Path(path)
    wfile = p / WEIGHTS_NAME if p.is_dir() else p
    if not wfile.is_file():
        raise GlomsslError(
            f"--labeler {p} holds no {WEIGHTS_NAME}; pass the --out folder of `datagan train-labeler`"
        )
    tensors, meta = load_weights(wfile, expect="datagan-labeler", flag="--labeler")
    if meta.get("kind") != "datagan-labeler":
        raise GlomsslError(
            f"{wfile} is not a datagan labeler (its .json sidecar is missing or other)"
        )
    model = make_labeler(
        int(meta["in_dim"]), int(meta["num_classes"]), int(meta["k"]), meta["hidden"]
    )
    try:
        model.load_state_dict(tensors)
    except RuntimeError as exc:
        raise GlomsslError(f"{wfile} does not match its sidecar ({exc})".splitlines()[0]) from exc
    return model.to(device).eval(), meta


@dataclass
class LabelerConfig:
    """``glomssl datagan train-labeler`` options (datasetGAN defaults: K=10, widths 128/32, Adam 1e-3)."""

    network: str
    annotations: str
    num_classes: int  # 2..255, checked in validate()
    out: str
    k: int = opt(10, ge=1)
    hidden: list[int] = opt(factory=lambda: [128, 32], ge=1)
    rounds: int = opt(4, ge=1)
    pool_mb: int = opt(1024, ge=1)
    max_pixels_per_image: int = opt(20000, ge=1)
    epochs: int = opt(2, ge=1)
    batch_size: int = opt(256, ge=1)
    lr: float = opt(1e-3, gt=0)
    seed: int = opt(0, ge=0)
    device: str = "cpu"
    quiet: bool = False

    def validate(self) -> None:
        from glomssl.engine import resolve_device

        resolve_device(self.device)
        if self.num_classes < 2 or self.num_classes > 255:
            raise GlomsslError(
                "--num-classes must be between 2 and 255 (255 marks unlabelled pixels)"
            )
        for name in ("k", "rounds", "pool_mb", "max_pixels_per_image", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise GlomsslError(f"--{name.replace('_', '-')} must be at least 1")
        if not self.hidden or min(self.hidden) < 1:
            raise GlomsslError("--hidden must list positive layer widths, e.g. 128,32")
        if self.lr <= 0:
            raise GlomsslError("--lr must be positive")


def train_labeler(cfg: LabelerConfig, G: nn.Module | None = None) -> dict[str, Any]:
    """Train the ensemble on an annotation folder; returns a summary (pixels seen, accuracy, path).

    ``G`` may be passed directly (tests, notebooks); otherwise it is loaded from ``cfg.network``.
    """
    import torch
    from tqdm import tqdm

    from glomssl.config import save_config
    from glomssl.datagan.factory import network_sha256
    from glomssl.datagan.features import (
        feature_channels,
        load_network,
        point_features,
        synthesize_latent,
    )
    from glomssl.engine import resolve_device
    from glomssl.fsutil import ensure_writable_dir

    cfg.validate()
    device = resolve_device(cfg.device)
    # inputs are checked and loaded before --out is created (a refused run leaves no folder)
    G = load_network(G if G is not None else cfg.network, device)
    res = int(G.img_resolution)  # type: ignore[arg-type]
    items = scan_annotations(cfg.annotations, cfg.num_classes, res, G)
    sha = network_sha256(G)
    for it in items:  # latents of the same shapes from another generator would train silently
        theirs = it.latent.get("network_sha256")
        if theirs is not None and theirs != sha:
            raise GlomsslError(
                f"annotation {it.name}.npz in --annotations {cfg.annotations} was made with another "
                f"generator ({it.latent.get('network', '?')}, weights sha256 {str(theirs)[:12]}) "
                f"than --network {cfg.network} ({sha[:12]}); pass the --network the annotations "
                "were sampled or projected with"
            )
    out = ensure_writable_dir(cfg.out)
    save_config(cfg, out / "config.yaml")
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)

    # layout from one synthesis; pool size from the byte budget
    img0, feats0 = synthesize_latent(G, items[0].latent, device)
    channels = feature_channels(feats0)
    c_total = sum(channels)
    del img0, feats0
    budget_px = max(1, cfg.pool_mb * 2**20 // (4 * c_total))
    per_image = max(1, min(cfg.max_pixels_per_image, res * res, budget_px // len(items)))

    model = make_labeler(c_total, cfg.num_classes, cfg.k, cfg.hidden).to(device)
    opts = [torch.optim.Adam(m.parameters(), lr=cfg.lr) for m in model.members]
    lossf = torch.nn.CrossEntropyLoss()
    seen = 0
    stats_set = False
    last_acc = float("nan")
    bar = tqdm(total=cfg.rounds * len(items), desc="labeler", disable=cfg.quiet, unit="img")
    for rnd in range(cfg.rounds):
        xs_list, ys_list = [], []
        for it in items:
            _img, feats = synthesize_latent(G, it.latent, device)
            mask = torch.from_numpy(read_mask(it.mask, res, cfg.num_classes)).long()  # (H, W)
            valid = (mask != IGNORE).flatten().nonzero().squeeze(1)
            pick = valid[torch.randperm(valid.numel(), generator=gen)[:per_image]]
            py, px = pick // res, pick % res
            xs_list.append(point_features(feats, py, px, (res, res)).cpu())  # (P, C_total)
            ys_list.append(mask.flatten()[pick])
            del feats
            bar.update(1)
        x = torch.cat(xs_list)  # (N_pool, C_total): bounded by pool_mb
        y = torch.cat(ys_list)
        del xs_list
        if not stats_set:  # per-channel standardisation from the first pool
            model.feat_mean.copy_(x.mean(0).to(device))
            model.feat_std.copy_(x.std(0).clamp(min=1e-6).to(device))
            stats_set = True
        model.train()
        correct = total = 0
        for mi, (member, optim) in enumerate(zip(model.members, opts)):
            for _ in range(cfg.epochs):
                order = torch.randperm(x.shape[0], generator=gen)
                for s in range(0, x.shape[0], cfg.batch_size):
                    idx = order[s : s + cfg.batch_size]
                    if idx.numel() < 2:  # BatchNorm needs two samples
                        continue
                    xb = model.normalise(x[idx].to(device))
                    yb = y[idx].to(device)
                    logits = member(xb)
                    loss = lossf(logits, yb)
                    optim.zero_grad(set_to_none=True)
                    loss.backward()
                    optim.step()
                    if rnd == cfg.rounds - 1 and mi == 0:
                        correct += int((logits.argmax(1) == yb).sum())
                        total += int(yb.numel())
        if total:
            last_acc = correct / total
        seen += int(x.shape[0])
        del x, y
    bar.close()
    model.eval()
    meta = {
        "channels": channels,
        "resolution": res,
        "network": str(cfg.network),
        "generator_sha256": sha,  # `datagan generate` refuses a labeler of another generator
        "annotations": [it.name for it in items],
        "pixels_seen": seen,
        "config": dataclasses.asdict(cfg),
    }
    path = save_labeler(model, out, meta)
    return {
        "labeler": str(path),
        "images": len(items),
        "pixels_per_image": per_image,
        "pixels_seen": seen,
        "train_accuracy": last_acc,
        "feature_dim": c_total,
    }


def check_compatible(meta: dict[str, Any], channels: list[int], resolution: int) -> None:
    """Raise if a labeler was trained on another generator's feature layout."""
    if list(meta.get("channels", [])) != list(channels) or int(meta.get("resolution", -1)) != int(
        resolution
    ):
        raise GlomsslError(
            "the labeler was trained on a different generator (feature layout "
            f"{sum(meta.get('channels', []))} ch @ {meta.get('resolution')} px vs "
            f"{sum(channels)} ch @ {resolution} px); retrain it with this --network"
        )


def top_decile_mean(js: torch.Tensor) -> float:
    """Per-image uncertainty: the mean of the top 10 % pixel JS divergences (datasetGAN ranking)."""
    flat = js.flatten()
    k = max(1, math.ceil(flat.numel() * 0.1))
    return float(flat.topk(k).values.mean())
