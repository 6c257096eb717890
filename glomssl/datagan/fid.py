"""Frechet and kernel distances (FID, KID) and the feature extractor they are measured with.

:class:`MetricEncoder` turns images in [0, 1] into features with a glomssl encoder (or any module);
:class:`glomssl.datagan.inception.InceptionEncoder` subclasses it for the standard Inception-v3 space.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from glomssl.errors import GlomsslError


def fid_from_features(real: np.ndarray, fake: np.ndarray) -> float:
    """Fréchet distance between Gaussian fits of two (N, D) feature sets."""
    if len(real) < 2 or len(fake) < 2:
        raise GlomsslError("FID needs at least 2 real and 2 generated images; raise --metric-num")
    r, f = real.astype(np.float64), fake.astype(np.float64)
    mu_r, mu_f = r.mean(0), f.mean(0)
    s_r, s_f = np.cov(r, rowvar=False), np.cov(f, rowvar=False)
    # Tr((S_r S_f)^(1/2)) = sum of sqrt(eigenvalues of S_r^(1/2) S_f S_r^(1/2)), a symmetric PSD
    # matrix: two symmetric eigendecompositions, stable even when the covariances are singular.
    w, v = np.linalg.eigh(s_r)
    half = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    ev = np.linalg.eigvalsh(half @ s_f @ half)
    tr_covmean = float(np.sqrt(np.clip(ev, 0, None)).sum())
    value = float(np.square(mu_r - mu_f).sum() + np.trace(s_r) + np.trace(s_f) - 2 * tr_covmean)
    return max(value, 0.0)


def kid_from_features(
    real: np.ndarray,
    fake: np.ndarray,
    subset_size: int = 1000,
    num_subsets: int = 100,
    seed: int = 0,
) -> float:
    """Kernel inception distance (unbiased MMD^2, cubic polynomial kernel), mean over subsets."""
    n = min(len(real), len(fake), subset_size)
    if n < 2:
        raise GlomsslError("KID needs at least 2 real and 2 generated images; raise --metric-num")
    d = real.shape[1]
    rng = np.random.default_rng(seed)
    total = 0.0
    for _ in range(num_subsets):
        x = fake[rng.choice(len(fake), n, replace=False)].astype(np.float64)
        y = real[rng.choice(len(real), n, replace=False)].astype(np.float64)
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        a = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (n * (n - 1))
        total += a - 2 * kxy.mean()
    return float(total / num_subsets)


class MetricEncoder:
    """Features of images in [0, 1] from a glomssl backbone (or any module giving (B, D) features).

    ``source`` is a ``glomssl pretrain`` run folder or backbone .safetensors (loaded with
    ``glomssl.models.encoder.load_backbone``), or an ``nn.Module`` (tests use a tiny stand-in).
    """

    def __init__(
        self,
        source: str | torch.nn.Module,
        device: str = "cpu",
        image_size: int | None = None,
        batch: int = 32,
    ) -> None:
        meta: dict[str, Any] = {}
        if isinstance(source, torch.nn.Module):
            self.model = source.to(device).eval()
        else:
            try:
                from glomssl.models.encoder import load_backbone
            except ImportError as exc:
                raise GlomsslError(
                    "--metric-encoder needs glomssl.ssl.embed (glomssl pretrain), which this "
                    "installation lacks; drop --metric-encoder"
                ) from exc
            from pathlib import Path

            if not Path(source).exists():
                raise GlomsslError(
                    f"--metric-encoder {source} does not exist; pass a `glomssl pretrain` run "
                    "folder or backbone .safetensors"
                )
            try:
                self.model, meta = load_backbone(source, device=device)
            except GlomsslError as exc:
                raise GlomsslError(f"--metric-encoder {source}: {exc}") from exc
        self.device = device
        self.image_size = image_size or meta.get("image_size")
        self.batch = batch

    @torch.no_grad()
    def features(self, images01: torch.Tensor) -> np.ndarray:
        """(B, 3, H, W) in [0, 1] -> (B, D) float32 features."""
        x = images01.to(self.device).float()
        if self.image_size and x.shape[-1] != self.image_size:
            x = torch.nn.functional.interpolate(
                x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True
            )
        out = self.model(x)
        return out.reshape(out.shape[0], -1).float().cpu().numpy()

    def _batched(self, uint8_images: Iterable[torch.Tensor]) -> np.ndarray:
        chunks: list[np.ndarray] = []
        buf: list[torch.Tensor] = []
        for img in uint8_images:
            buf.append(img)
            if len(buf) == self.batch:
                chunks.append(self.features(torch.stack(buf).float() / 255))
                buf = []
        if buf:
            chunks.append(self.features(torch.stack(buf).float() / 255))
        return np.concatenate(chunks)

    def dataset_features(self, dataset: Any, num: int, seed: int = 0) -> np.ndarray:
        """Features of ``num`` training images (a random order; repeats when the set is smaller)."""
        from glomssl.datagan.dataset import iter_images

        return self._batched(iter_images(dataset, num, seed))

    @torch.no_grad()
    def generator_features(
        self, G: Any, num: int, seed: int = 0, truncation_psi: float = 1.0
    ) -> np.ndarray:
        """Features of ``num`` images from G with fixed latents (``seed``), noise mode const."""
        dev = next(G.parameters()).device
        gen = torch.Generator().manual_seed(seed)
        chunks: list[np.ndarray] = []
        done = 0
        while done < num:
            n = min(self.batch, num - done)
            z = torch.randn(n, G.z_dim, generator=gen).to(dev)
            img = G(z, truncation_psi=truncation_psi, noise_mode="const").float()
            chunks.append(self.features((img.clamp(-1, 1) + 1) / 2))
            done += n
        return np.concatenate(chunks)
