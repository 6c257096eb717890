"""Encoder-decoders that give every segmenter head its per-pixel features and a global descriptor.

Two families, one contract (:class:`EncoderDecoder`): ``forward(x)`` with normalised images
(B, 3, H, W) returns ``(features (B, feat_dim, H, W), bottleneck (B, C_b, H/stride, W/stride))``.
The heads of :mod:`glomssl.models.segmenters` read ``features`` per pixel, and the dynamic head's
controller reads the global average of ``bottleneck``.

- :class:`ResUNet`: the residual U-Net of Glo-In-One v2 (J. Med. Imaging 2025, ../shared/papers/000,
  after Deng et al.'s single dynamic network): pre-activation residual blocks (GroupNorm(16) -> ReLU ->
  3x3 conv, twice, plus the identity), a 3 -> 32 stem, encoder widths 32/64/128/256/256 with four
  stride-2 stages, a decoder that upsamples x2, projects to the skip's width and *adds* the skip, and a
  GroupNorm -> ReLU -> 1x1 conv 32 -> 8 "pre-head" feature. ``base`` scales every width (32 is the
  paper's; 8 or 16 keep CPU experiments small).
- :class:`ResNetUNet`: the ResNet trunk + U-Net decoder that ``glomssl pretrain`` trains and exports
  (``backbone.safetensors``, and ``decoder.safetensors`` for region-contrast runs), followed by the same
  kind of 1x1 pre-head and a x2 upsampling to full resolution; the bottleneck is the trunk's layer4.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from glomssl.errors import GlomsslError


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 16 groups (GIO2), fewer when the width is small (one group per 2 channels)."""
    groups = 16 if channels % 16 == 0 and channels >= 32 else max(1, channels // 2)
    return nn.GroupNorm(groups, channels)


class PreActBlock(nn.Module):
    """Pre-activation residual block: x + conv(relu(gn(conv(relu(gn(x)))))), widths unchanged."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gn1, self.conv1 = (
            group_norm(channels),
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
        )
        self.gn2, self.conv2 = (
            group_norm(channels),
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.relu(self.gn1(x)))  # (B, C, H, W)
        return x + self.conv2(F.relu(self.gn2(h)))  # (B, C, H, W)


class DownStage(nn.Module):
    """GN -> ReLU -> stride-2 3x3 conv to the new width, then ``blocks`` residual blocks."""

    def __init__(self, cin: int, cout: int, blocks: int) -> None:
        super().__init__()
        self.gn = group_norm(cin)
        self.down = nn.Conv2d(cin, cout, 3, 2, 1, bias=False)
        self.blocks = nn.Sequential(*(PreActBlock(cout) for _ in range(blocks)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.down(F.relu(self.gn(x))))  # (B, cout, H/2, W/2)


class UpStage(nn.Module):
    """Upsample x2, 1x1-project to the skip's width, add the skip, one residual block."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.gn = group_norm(cin)
        self.proj = nn.Conv2d(cin, cout, 1, bias=False)
        self.block = PreActBlock(cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.block(self.proj(F.relu(self.gn(x))) + skip)  # (B, cout, h_skip, w_skip)


class EncoderDecoder(nn.Module):
    """What the heads need to know about an encoder-decoder (set by subclasses)."""

    feat_dim: int = 8
    bottleneck_dim: int = 256
    stride: int = 16


class ResUNet(EncoderDecoder):
    """The Glo-In-One v2 residual U-Net (see the module docstring); stride 16.

    ``base`` is the stem width (32 in the paper), the encoder widths are base x (1, 2, 4, 8, 8) and
    ``blocks`` the residual blocks per encoder stage (DoDNet's 1, 2, 2, 2, 2).
    """

    def __init__(
        self,
        base: int = 32,
        feat_dim: int = 8,
        blocks: tuple[int, int, int, int, int] = (1, 2, 2, 2, 2),
    ) -> None:
        super().__init__()
        if base < 4 or base % 4:
            raise GlomsslError(f"resunet base width {base} must be a positive multiple of 4")
        w = [base, base * 2, base * 4, base * 8, base * 8]
        self.stem = nn.Conv2d(3, w[0], 3, 1, 1, bias=False)
        self.enc0 = nn.Sequential(*(PreActBlock(w[0]) for _ in range(blocks[0])))
        self.downs = nn.ModuleList(DownStage(w[i], w[i + 1], blocks[i + 1]) for i in range(4))
        self.ups = nn.ModuleList(UpStage(w[i + 1], w[i]) for i in reversed(range(4)))
        self.pre_head = nn.Sequential(group_norm(w[0]), nn.ReLU(), nn.Conv2d(w[0], feat_dim, 1))
        self.feat_dim = feat_dim
        self.bottleneck_dim = w[4]
        self.stride = 16

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skips = [self.enc0(self.stem(x))]  # [(B, w0, H, W)]
        for down in self.downs:
            skips.append(down(skips[-1]))  # w1 H/2, w2 H/4, w3 H/8, w4 H/16
        y = skips[-1]  # bottleneck (B, w4, H/16, W/16)
        for up, skip in zip(self.ups, reversed(skips[:-1])):
            y = up(y, skip)  # back up to (B, w0, H, W)
        return self.pre_head(y), skips[-1]  # (B, feat_dim, H, W), (B, w4, H/16, W/16)


class ResNetUNet(EncoderDecoder):
    """ResNet trunk + U-Net decoder (``glomssl pretrain``'s layout) + 1x1 pre-head; stride 32.

    The trunk's and decoder's state dicts keep the names ``pretrain`` exports, so
    :func:`load_pretrained` can start them from a pretraining run.
    """

    def __init__(self, arch: str = "resnet18", feat_dim: int = 8) -> None:
        super().__init__()
        from glomssl.models.backbones import ResNetTrunk, stage_channels
        from glomssl.models.unet import UNetDecoder

        self.arch = arch
        self.trunk = ResNetTrunk(arch)
        self.decoder = UNetDecoder(arch)
        self.pre_head = nn.Sequential(nn.ReLU(), nn.Conv2d(self.decoder.out_dim, feat_dim, 1))
        self.feat_dim = feat_dim
        self.bottleneck_dim = stage_channels(arch)[3]
        self.stride = 32

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        stages = self.trunk.stages(x)  # [stem H/2, l1 H/4, l2 H/8, l3 H/16, l4 H/32]
        y = self.pre_head(self.decoder(stages))  # (B, feat_dim, H/2, W/2)
        y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return y, stages[4]  # (B, feat_dim, H, W), (B, C4, H/32, W/32)


def create_encoder_decoder(encoder: str, base: int = 32, feat_dim: int = 8) -> EncoderDecoder:
    """``resunet`` (GIO2) or a ResNet name (``resnet18``/``34``/``50``: the pretrain layout)."""
    from glomssl.models.backbones import ARCHS

    if encoder == "resunet":
        return ResUNet(base=base, feat_dim=feat_dim)
    if encoder in ARCHS:
        return ResNetUNet(encoder, feat_dim=feat_dim)
    raise GlomsslError(f"unknown encoder {encoder!r}; choose resunet or one of {', '.join(ARCHS)}")


def load_pretrained(net: EncoderDecoder, init: str) -> dict[str, str]:
    """Start a ResNet encoder-decoder from a ``glomssl pretrain`` run (or its backbone.safetensors).

    The trunk is loaded from ``backbone.safetensors``; a region-contrast run's ``decoder.safetensors``
    (beside it) starts the decoder too. Returns what was loaded (for model.json). One-line errors for
    a ResUNet (nothing pretrained exists for it), an arch mismatch or a missing file.
    """
    from pathlib import Path

    from glomssl.models.encoder import resolve_weights
    from glomssl.runs import load_weights

    if not isinstance(net, ResNetUNet):
        raise GlomsslError(
            f"--init {init}: pretrained encoders are ResNets; use --encoder resnet18 (or the arch "
            "of that run) with --init, or drop --init for the resunet"
        )
    wpath = resolve_weights(init)
    tensors, meta = load_weights(wpath, expect="ssl-backbone", flag="--init")
    arch = meta.get("arch")
    if arch and arch != net.arch:
        raise GlomsslError(
            f"--init {init} holds a {arch} encoder but the model uses {net.arch}; pass --encoder {arch}"
        )
    net.trunk.load_trunk_state_dict(tensors, str(wpath))
    loaded = {"encoder": str(wpath), "method": str(meta.get("method", "?"))}
    dpath = Path(wpath).with_name("decoder.safetensors")
    if dpath.is_file():
        dec, _ = load_weights(dpath, expect="ssl-decoder")
        missing, unexpected = net.decoder.load_state_dict(dec, strict=False)
        if missing or unexpected:
            raise GlomsslError(
                f"{dpath} does not match the {net.arch} U-Net decoder (missing {len(missing)}, "
                f"unexpected {len(unexpected)} keys); re-export the pretraining run"
            )
        loaded["decoder"] = str(dpath)
    return loaded
