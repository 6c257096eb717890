"""The U-Net decoder over a ResNet trunk's stages (region-contrast pretraining, the segmenters)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from glomssl.models.backbones import stage_channels
from glomssl.models.registry import register_model


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


@register_model("unet_decoder", "U-Net decoder over a ResNet trunk's five stages (arch=...)")
class UNetDecoder(nn.Module):
    """U-Net style decoder over a ResNet's stages: upsample x2, concatenate the skip, two 3x3 convs.

    Input: [stem (64, H/2), l1 (C1, H/4), l2 (C2, H/8), l3 (C3, H/16), l4 (C4, H/32)];
    output (B, out_dim, H/2, W/2). The segmenter (a later stage) reuses this decoder's weights.
    """

    def __init__(
        self, arch: str, widths: tuple[int, int, int, int] = (256, 128, 64, 64), out_dim: int = 64
    ):
        super().__init__()
        c1, c2, c3, c4 = stage_channels(arch)
        skips = (c3, c2, c1, 64)
        ins = (c4, *widths[:3])
        self.blocks = nn.ModuleList(
            nn.Sequential(_conv_bn_relu(cin + cs, w), _conv_bn_relu(w, w))
            for cin, cs, w in zip(ins, skips, widths)
        )
        self.head = nn.Conv2d(widths[-1], out_dim, 1)
        self.out_dim = out_dim

    def forward(self, stages: list[torch.Tensor]) -> torch.Tensor:
        x = stages[4]  # (B, C4, H/32, W/32)
        for block, skip in zip(self.blocks, (stages[3], stages[2], stages[1], stages[0])):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))  # (B, w, h_skip, w_skip)
        return self.head(x)  # (B, out_dim, H/2, W/2)
