"""Encoders built by name: torchvision ResNet trunks (``weights=None``) with the classifier removed.

The exported weights keep torchvision's key names (``conv1.weight``, ``layer1.0.bn1.running_mean``) so
that any later stage (the segmenter, the classifier, ``glomssl embed``) rebuilds the same trunk with
``torchvision.models.resnetXX(weights=None)`` and loads them with ``strict=True`` minus ``fc``.
Nothing is downloaded: every encoder starts from random initialisation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from glomssl.errors import GlomsslError
from glomssl.models.registry import register_model

#: arch -> (torchvision builder name, pooled feature dim, channels of layer1..layer4)
ARCHS: dict[str, tuple[str, int, tuple[int, int, int, int]]] = {
    "resnet18": ("resnet18", 512, (64, 128, 256, 512)),
    "resnet34": ("resnet34", 512, (64, 128, 256, 512)),
    "resnet50": ("resnet50", 2048, (256, 512, 1024, 2048)),
}

#: ImageNet statistics: the usual input normalisation (kept although weights start at random).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_arch(arch: str) -> str:
    if arch not in ARCHS:
        raise GlomsslError(f"unknown --arch {arch!r}; choose one of {', '.join(ARCHS)}")
    return arch


def feature_dim(arch: str) -> int:
    """Width of the globally pooled output of ``arch`` (512 for ResNet-18/34, 2048 for ResNet-50)."""
    return ARCHS[check_arch(arch)][1]


def stage_channels(arch: str) -> tuple[int, int, int, int]:
    """Channels of layer1..layer4 (the skip connections a U-Net decoder reads)."""
    return ARCHS[check_arch(arch)][2]


def create_trunk(arch: str) -> nn.Module:
    """A torchvision ResNet with random weights and ``fc`` replaced by identity-free deletion.

    The returned module still has torchvision's attribute names (conv1, bn1, layer1..4, avgpool), so its
    ``state_dict()`` keys match torchvision's exactly (minus ``fc.*``).
    """
    import torchvision

    name = ARCHS[check_arch(arch)][0]
    builder: Callable[..., nn.Module] = getattr(torchvision.models, name)
    net = builder(weights=None)
    del net.fc
    return net


class FixedStatsBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm that always normalises with its stored statistics, in training too; they never
    update. Its affine weight and bias still train, and its state dict keys are BatchNorm2d's, so
    the exported trunk loads as a plain torchvision ResNet."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
        )


def _freeze_bn_statistics(module: nn.Module) -> None:
    """Swap every BatchNorm2d of ``module`` (in place) for a FixedStatsBatchNorm2d with its state."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            fixed = FixedStatsBatchNorm2d(child.num_features, eps=child.eps)
            fixed.load_state_dict(child.state_dict())
            setattr(module, name, fixed)
        else:
            _freeze_bn_statistics(child)


class ResNetTrunk(nn.Module):
    """Wraps a torchvision ResNet (no ``fc``): ``forward`` gives pooled features, ``stages`` the maps.

    The wrapped module is stored as ``net`` but :meth:`trunk_state_dict` returns torchvision key names.
    """

    def __init__(self, arch: str, frozen_bn: bool = False) -> None:
        super().__init__()
        self.arch = check_arch(arch)
        self.net = create_trunk(arch)
        self.feature_dim = feature_dim(arch)
        self.frozen_bn = frozen_bn
        if frozen_bn:
            _freeze_bn_statistics(self.net)

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps after the stem and each stage: [stem (C0,H/2), l1 (H/4), l2, l3, l4 (H/32)]."""
        n: Any = self.net
        s0 = n.relu(n.bn1(n.conv1(x)))  # (B, 64, H/2, W/2)
        s1 = n.layer1(n.maxpool(s0))  # (B, C1, H/4, W/4)
        s2 = n.layer2(s1)  # (B, C2, H/8, W/8)
        s3 = n.layer3(s2)  # (B, C3, H/16, W/16)
        s4 = n.layer4(s3)  # (B, C4, H/32, W/32)
        return [s0, s1, s2, s3, s4]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, feature_dim) globally average-pooled features."""
        return torch.flatten(self.stages(x)[-1].mean(dim=(2, 3), keepdim=True), 1)

    def trunk_state_dict(self) -> dict[str, torch.Tensor]:
        """State dict with torchvision key names (``conv1.weight`` ...), no ``fc``."""
        return {k: v for k, v in self.net.state_dict().items() if not k.startswith("fc.")}

    def load_trunk_state_dict(self, state: dict[str, Any], source: str = "weights") -> None:
        missing, unexpected = self.net.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise GlomsslError(
                f"{source} does not match a {self.arch} trunk (missing {len(missing)} keys, e.g. "
                f"{missing[:2]}; unexpected {len(unexpected)}, e.g. {unexpected[:2]}); check --arch"
            )


def create_backbone(arch: str, frozen_bn: bool = False) -> ResNetTrunk:
    """Build a randomly initialised trunk by name (also registered as models ``resnet18`` ...)."""
    return ResNetTrunk(arch, frozen_bn=frozen_bn)


def _register_trunks() -> None:
    for name in ARCHS:

        def build(frozen_bn: bool = False, _arch: str = name) -> ResNetTrunk:
            return ResNetTrunk(_arch, frozen_bn=frozen_bn)

        register_model(name, f"{name} trunk (torchvision layout, random init), pooled features")(
            build
        )


_register_trunks()
