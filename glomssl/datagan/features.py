"""Per-pixel generator features, computed one row band at a time so memory stays bounded.

DatasetGAN (Zhang et al., CVPR 2021) labels a generated image by upsampling every synthesis layer's
activation map to the label resolution, concatenating them per pixel and classifying each pixel's
feature vector with a small MLP ensemble. Done naively the whole ``(C_total, H, W)`` tensor is built at
once: for a default-width 1024x1024 StyleGAN2 that is ~5,500 channels x 1M pixels x 4 bytes ~ 22 GB,
which is why the original code (and Lutnick & Sarder on renal biopsies) had to label at 256x256.

Here the upsampling is bilinear (``align_corners=False``, PyTorch's convention) and *separable*: for a
band of output rows ``[y0, y1)`` each layer only needs the one or two source rows that the band's rows
interpolate between, so the band is assembled straight into a pixel-major buffer of shape
``(y1 - y0, W, C_total)``. Results equal the whole-image ``F.interpolate(..., "bilinear")`` to float
rounding (tested).

Peak memory of labelling one image, in float32 bytes:
  native features  sum_i C_i * H_i * W_i * 4     (the synthesis activations themselves; ~0.5 GB at
                                                  1024 for the default widths, ~4x less per halving)
  one band         rows * W * C_total * 4        (the buffer, plus one layer's slice at a time)
  classifier       rows * W * (K * hidden + C)*4 (ensemble activations for the band's pixels)
``band_rows`` is chosen from a byte budget (:func:`rows_for_budget`), so a 1024x1024 image never needs
more than the native features plus ``budget`` bytes, instead of 22 GB. Measured on CPU with the
default-width ("auto") generator and K=10 (docs/experiments/gan-speed.md): the whole ``generate``
process peaks at 1.6 / 1.9 GB RSS at 512 / 1024 px (2.6 / 4.5 GB before the fused synthesis of issue
16), most of it loading the snapshot.
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from glomssl.errors import GlomsslError

if TYPE_CHECKING:
    import torch
    from torch import nn

DEFAULT_BAND_BYTES = 256 * 2**20  # budget for one band's feature buffer (256 MiB)


def load_network(network: str | os.PathLike[str] | nn.Module, device: str = "cpu") -> nn.Module:
    """A generator from a ``gan train`` run folder / snapshot path, or an already built module.

    The module must follow the glomssl Generator contract (``mapping``, ``synthesis(...,
    return_features=True)``, ``z_dim``, ``num_ws``, ``w_dim``, ``img_resolution``). Returned in eval
    mode with gradients off (the label factory never trains the generator).
    """
    import torch

    if isinstance(network, torch.nn.Module):
        G = network
    else:
        p = Path(network)
        if not p.exists():
            raise GlomsslError(
                f"--network {p} does not exist; pass a `glomssl gan train` run folder or snapshot"
            )
        from glomssl.datagan.snapshot import load_generator

        G, _meta = load_generator(p, device=device)
    G = G.to(device).eval()
    for prm in G.parameters():
        prm.requires_grad_(False)
    return G


def synthesize(
    G: nn.Module, ws: torch.Tensor, noise_mode: str = "const"
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run the synthesis network on ``ws`` (B, num_ws, w_dim); return (img, every layer's features).

    ``img`` is (B, 3, H, W) in [-1, 1]; ``feats`` is a list of (B, C_i, H_i, W_i), in layer order.
    """
    import torch

    with torch.no_grad():
        out = G.synthesis(ws, noise_mode=noise_mode, return_features=True)  # type: ignore[operator]
    img, feats = out
    return img, list(feats)


def synthesize_images(G: nn.Module, ws: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
    """Images only (B, 3, H, W) for ``ws`` (B, num_ws, w_dim), without gradients or kept features."""
    import torch

    with torch.no_grad():
        return G.synthesis(ws, noise_mode=noise_mode)  # type: ignore[operator,no-any-return]


def feature_channels(feats: Sequence[torch.Tensor]) -> list[int]:
    """Channel count of every layer: the labeler's input layout (sum = C_total)."""
    return [int(f.shape[1]) for f in feats]


def _src_index(out_size: int, in_size: int, dst: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Bilinear source indices/weights for output coordinates ``dst`` (align_corners=False).

    Mirrors PyTorch's ``area_pixel_compute_source_index``: src = (dst + 0.5) * in/out - 0.5, clamped
    at 0; the two neighbours are floor(src) and floor(src)+1 (clamped to the last index).
    """
    import torch

    scale = in_size / out_size
    src = ((dst.to(torch.float64) + 0.5) * scale - 0.5).clamp(min=0.0)
    i0 = src.floor().long().clamp(max=in_size - 1)
    i1 = (i0 + 1).clamp(max=in_size - 1)
    w1 = (src - i0.to(torch.float64)).to(torch.float32)
    return i0, i1, 1.0 - w1, w1


def _rows_of_layer(f: torch.Tensor, y0: int, y1: int, out_h: int) -> torch.Tensor:
    """Vertically interpolate a (C, H_i, W_i) map to output rows [y0, y1): (C, y1-y0, W_i)."""
    import torch

    h_in = f.shape[1]
    if h_in == out_h:
        return f[:, y0:y1]
    dst = torch.arange(y0, y1, device=f.device)
    i0, i1, w0, w1 = _src_index(out_h, h_in, dst)
    lo = int(i0.min())
    hi = int(i1.max()) + 1
    sub = f[:, lo:hi]  # (C, few, W_i): only the source rows this band touches
    a = sub.index_select(1, i0 - lo)  # (C, R, W_i)
    b = sub.index_select(1, i1 - lo)
    return a * w0.to(f.device).view(1, -1, 1) + b * w1.to(f.device).view(1, -1, 1)


def band_features(
    feats: Sequence[torch.Tensor],
    y0: int,
    y1: int,
    out_hw: tuple[int, int],
    index: int = 0,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pixel features of output rows [y0, y1) of image ``index``: (y1-y0, W, C_total), pixel-major.

    ``feats`` are the native-resolution synthesis activations (B, C_i, H_i, W_i). Each layer is
    bilinearly upsampled (separably: rows, then columns) only for the band, and written into its slice
    of the channel axis, so no (C_total, H, W) tensor ever exists.
    """
    import torch
    import torch.nn.functional as F

    out_h, out_w = out_hw
    rows = y1 - y0
    c_total = sum(int(f.shape[1]) for f in feats)
    if out is None:
        out = torch.empty(rows, out_w, c_total, dtype=torch.float32, device=feats[0].device)
    off = 0
    for f in feats:
        c = int(f.shape[1])
        band = _rows_of_layer(f[index].float(), y0, y1, out_h)  # (C, R, W_i)
        if band.shape[2] != out_w:
            band = F.interpolate(
                band.reshape(1, c * rows, -1), size=out_w, mode="linear", align_corners=False
            ).view(c, rows, out_w)  # (C, R, W)
        out[:, :, off : off + c] = band.permute(1, 2, 0)  # (R, W, C)
        off += c
    return out


def point_features(
    feats: Sequence[torch.Tensor],
    ys: torch.Tensor,
    xs: torch.Tensor,
    out_hw: tuple[int, int],
    index: int = 0,
) -> torch.Tensor:
    """Features of individual output pixels (ys[n], xs[n]) of image ``index``: (N, C_total).

    The same bilinear upsampling evaluated only at the requested points (four gathers per layer), so
    the labeler can be trained on randomly sampled pixels without building any full feature map.
    """
    import torch

    out_h, out_w = out_hw
    parts = []
    for f in feats:
        fm = f[index].float()  # (C, H_i, W_i)
        h_in, w_in = fm.shape[1], fm.shape[2]
        yi0, yi1, wy0, wy1 = _src_index(out_h, h_in, ys)
        xi0, xi1, wx0, wx1 = _src_index(out_w, w_in, xs)
        dev = fm.device
        yi0, yi1, xi0, xi1 = yi0.to(dev), yi1.to(dev), xi0.to(dev), xi1.to(dev)
        wy0, wy1, wx0, wx1 = wy0.to(dev), wy1.to(dev), wx0.to(dev), wx1.to(dev)
        flat = fm.reshape(fm.shape[0], -1)  # (C, H_i*W_i)
        # row-then-column interpolation, the order PyTorch's bilinear kernel uses
        top = flat[:, yi0 * w_in + xi0] * wx0 + flat[:, yi0 * w_in + xi1] * wx1  # (C, N)
        bot = flat[:, yi1 * w_in + xi0] * wx0 + flat[:, yi1 * w_in + xi1] * wx1
        parts.append((top * wy0 + bot * wy1).t())  # (N, C)
    return torch.cat(parts, dim=1)


def full_features(feats: Sequence[torch.Tensor], out_hw: tuple[int, int], index: int = 0) -> Any:
    """The naive whole-image tensor (C_total, H, W), as datasetGAN builds it. Reference/benchmark only."""
    import torch
    import torch.nn.functional as F

    ups = [
        F.interpolate(
            f[index : index + 1].float(), size=out_hw, mode="bilinear", align_corners=False
        )
        for f in feats
    ]
    return torch.cat(ups, dim=1)[0]  # (C_total, H, W)


def rows_for_budget(c_total: int, width: int, budget_bytes: int = DEFAULT_BAND_BYTES) -> int:
    """Rows per band so one band's float32 buffer (rows * W * C_total * 4 B) fits ``budget_bytes``."""
    per_row = max(1, c_total * width * 4)
    return max(1, min(width, math.floor(budget_bytes / per_row)))


# --------------------------------------------------------------------------------------------------
# Latents on disk: the annotation folder's ``X.npz`` beside ``X.png``

NOISE_PREFIX = "noise:"


def noise_buffers(G: nn.Module) -> dict[str, torch.Tensor]:
    """The generator's per-layer constant noise maps (``*.noise_const`` buffers), by name."""
    return {n: b for n, b in G.named_buffers() if n.endswith("noise_const")}


def save_latent(
    path: str | os.PathLike[str],
    ws: torch.Tensor,
    noise: dict[str, torch.Tensor] | None = None,
    **meta: Any,
) -> None:
    """Write ``ws`` (num_ws, w_dim), optional per-layer noise maps and scalar metadata to an .npz.

    The file is plain numpy (no pickles), written atomically.
    """
    import io

    import numpy as np

    from glomssl.fsutil import atomic_write_bytes

    arrays: dict[str, Any] = {"ws": ws.detach().cpu().float().numpy()}
    for name, t in (noise or {}).items():
        arrays[NOISE_PREFIX + name] = t.detach().cpu().float().numpy()
    for k, v in meta.items():
        arrays[k] = np.asarray(v)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def load_latent(path: str | os.PathLike[str], G: nn.Module | None = None) -> dict[str, Any]:
    """Read a latent .npz: ``{"ws": (num_ws, w_dim) tensor, "noise": {name: tensor}, ...meta}``.

    With ``G`` given, the shapes are checked against it so a latent from another network fails early.
    """
    import numpy as np
    import torch

    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise GlomsslError(f"latent {p} is not a readable .npz ({exc}); re-create it") from exc
    if "ws" not in data:
        raise GlomsslError(
            f"latent {p} holds no 'ws' array; re-create it with datagan sample/project"
        )
    ws = torch.from_numpy(np.asarray(data.pop("ws"), dtype=np.float32))
    noise = {
        k[len(NOISE_PREFIX) :]: torch.from_numpy(data.pop(k))
        for k in list(data)
        if k.startswith(NOISE_PREFIX)
    }
    if G is not None:
        want = (int(G.num_ws), int(G.w_dim))  # type: ignore[arg-type]
        if tuple(ws.shape) != want:
            raise GlomsslError(
                f"latent {p} has ws of shape {tuple(ws.shape)} but --network expects {want}; "
                "it was made with a different generator"
            )
        known = noise_buffers(G)
        for name, t in noise.items():
            if name not in known or known[name].shape != t.shape:
                raise GlomsslError(f"latent {p}: noise map {name} does not fit --network")
    out: dict[str, Any] = {k: v.item() if v.ndim == 0 else v for k, v in data.items()}
    out["ws"] = ws
    out["noise"] = noise
    return out


def synthesize_latent(
    G: nn.Module, latent: dict[str, Any], device: str = "cpu"
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Synthesise one latent (with its own noise maps, if it carries any): (img, feats), batch 1."""
    import torch

    ws = latent["ws"].to(device)[None]  # (1, num_ws, w_dim)
    noise = latent.get("noise") or {}
    if not noise:
        return synthesize(G, ws)
    bufs = noise_buffers(G)
    saved = {n: bufs[n].clone() for n in noise}
    try:
        with torch.no_grad():
            for n, t in noise.items():
                bufs[n].copy_(t.to(bufs[n].device))
        return synthesize(G, ws)
    finally:
        with torch.no_grad():
            for n, t in saved.items():
                bufs[n].copy_(t)
