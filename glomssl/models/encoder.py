"""Pretrained encoders on disk: the contract between ``glomssl pretrain`` and every later stage.

:func:`load_backbone` rebuilds the torchvision trunk named in ``backbone.json``, loads
``backbone.safetensors`` (a run folder or the file) and wraps it as an :class:`Encoder`: images
(B, 3, H, W) in [0, 1] -> (B, feature_dim) pooled features, the sidecar's normalisation applied inside.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from glomssl.errors import GlomsslError
from glomssl.models.backbones import IMAGENET_MEAN, IMAGENET_STD, ResNetTrunk, stage_channels


class Encoder(nn.Module):
    """Normalise with (mean, std), run the trunk, global-average-pool: (B,3,H,W) -> (B, D).

    ``layers`` selects which stages are pooled and concatenated (default: layer4 only, the contract's
    feature vector; e.g. ``(3, 4)`` gives a richer multi-scale descriptor for probes).
    """

    def __init__(
        self, trunk: Any, mean: list[float], std: list[float], layers: tuple[int, ...] = (4,)
    ):
        super().__init__()
        self.trunk = trunk
        self.layers = tuple(layers)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    mean: torch.Tensor
    std: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stages = self.trunk.stages((x - self.mean) / self.std)  # [stem, l1, l2, l3, l4]
        pooled = [stages[i].mean(dim=(2, 3)) for i in self.layers]  # each (B, C_i)
        return torch.cat(pooled, dim=1)  # (B, sum C_i)


def resolve_weights(path: str | os.PathLike[str]) -> Path:
    """A run folder -> its ``backbone.safetensors``; a file is returned as is."""
    p = Path(path)
    if p.is_dir():
        p = p / "backbone.safetensors"
        if not p.is_file():
            raise GlomsslError(
                f"{path} holds no backbone.safetensors; is it a `glomssl pretrain` run?"
            )
    return p


def load_backbone(
    path: str | os.PathLike[str],
    device: str = "cpu",
    layers: tuple[int, ...] = (4,),
    flag: str | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Load an exported encoder (run folder or .safetensors) as an eval-mode :class:`Encoder`;
    another kind of model's weights is refused naming ``flag``, the option that gave them."""
    from glomssl.runs import load_weights

    wpath = resolve_weights(path)
    tensors, meta = load_weights(wpath, expect="ssl-backbone", flag=flag)
    arch = meta.get("arch")
    if not arch:
        raise GlomsslError(f"{wpath} has no backbone.json sidecar naming its arch; re-export it")
    trunk = ResNetTrunk(str(arch))
    trunk.load_trunk_state_dict(tensors, str(wpath))
    if any(i not in (1, 2, 3, 4) for i in layers):
        raise GlomsslError(f"--layers must be among 1,2,3,4; got {layers}")
    enc = Encoder(
        trunk, meta.get("mean", list(IMAGENET_MEAN)), meta.get("std", list(IMAGENET_STD)), layers
    )
    info = dict(meta)
    info["feature_dim"] = int(sum(stage_channels(str(arch))[i - 1] for i in layers))
    return enc.to(device).eval(), info
