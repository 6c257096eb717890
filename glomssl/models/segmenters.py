"""The segmenters of ``glomssl finetune seg``, registered by name (``create_model("dynamic", ...)``).

Every segmenter takes images (B, 3, H, W) in [0, 1] (it normalises them itself with the ``mean``/``std``
it was built with) and offers one interface:

- ``forward(x)``: raw outputs for ALL classes from ONE pass: (B, K, H, W) logits (sigmoid models) or
  (B, K + 1, H, W) softmax logits (``multiclass``, channel 0 = background);
- ``forward_tasks(x, tasks)``: (B, H, W) logits of each image's own task (partially labelled training,
  sigmoid models only);
- ``probabilities(x, idx)``: (B, len(idx), H, W) class probabilities for the class indices ``idx``.

Models (Glo-In-One v2, ../shared/papers/000, and its baselines):

- ``dynamic``: encoder-decoder + class-aware controller + dynamic head (ours, the GIO2 design);
- ``multihead``: the same encoder-decoder, one 1x1 sigmoid head per class;
- ``multiclass``: the same encoder-decoder, one softmax over background + K classes: the naive
  baseline, which must treat unannotated classes as background;
- ``unet``: one encoder-decoder per class (the "U-Nets" baseline), K passes for K classes;
- ``deeplabv3``: torchvision's DeepLabV3 (``weights=None``: nothing downloaded), one sigmoid channel
  per class.

The encoder-decoder of the first four is ``encoder="resunet"`` (GIO2's residual U-Net) or a ResNet name
(``resnet18``: the layout ``glomssl pretrain`` exports, startable from a pretraining run).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from glomssl.errors import GlomsslError
from glomssl.models.backbones import IMAGENET_MEAN, IMAGENET_STD
from glomssl.models.dynamic_head import Controller, DynamicHead
from glomssl.models.registry import register_model
from glomssl.models.resunet import EncoderDecoder, create_encoder_decoder, load_pretrained

SEGMENTER_NAMES = ("dynamic", "multihead", "multiclass", "unet", "deeplabv3")


class Segmenter(nn.Module):
    """Common part: class list, input normalisation, the kwargs that rebuild it (for model.json)."""

    output = "sigmoid"  # or "softmax" (multiclass)
    stride = 16

    def __init__(
        self,
        name: str,
        classes: Sequence[str],
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        **build: Any,
    ) -> None:
        super().__init__()
        classes = [str(c) for c in classes]
        if not classes:
            raise GlomsslError("a segmenter needs at least one class; give --classes")
        if len(set(classes)) != len(classes):
            raise GlomsslError(f"--classes lists a class twice: {','.join(classes)}")
        self.name = name
        self.classes = classes
        self.build_kwargs: dict[str, Any] = {
            "classes": classes,
            "mean": [float(v) for v in mean],
            "std": [float(v) for v in std],
            **build,
        }
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1))

    mean: torch.Tensor
    std: torch.Tensor

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std  # (B, 3, H, W)

    def forward_tasks(self, x: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W), (B,) task ids -> (B, H, W) logits of each image's task (default: all, pick)."""
        out = self.forward(x)  # (B, K, H, W)
        return out[torch.arange(x.shape[0], device=x.device), tasks]

    def probabilities(self, x: torch.Tensor, idx: Sequence[int] | None = None) -> torch.Tensor:
        """(B, 3, H, W) -> (B, len(idx), H, W) probabilities of the classes ``idx`` (default all)."""
        out = torch.sigmoid(self.forward(x))  # (B, K, H, W)
        return out if idx is None else out[:, list(idx)]

    def load_init(self, init: str) -> dict[str, Any]:
        """Start the encoder-decoder(s) from a ``glomssl pretrain`` run; returns what was loaded."""
        nets = [m for m in self.modules() if isinstance(m, EncoderDecoder)]
        if not nets:
            raise GlomsslError(f"--init: model {self.name} has no ResNet encoder to initialise")
        info: dict[str, Any] = {}
        for net in nets:
            info = load_pretrained(net, init)
        return info


class DynamicSegmenter(Segmenter):
    """Encoder-decoder + controller + dynamic head (GIO2); all K heads from one pass."""

    def __init__(
        self,
        classes: Sequence[str],
        encoder: str = "resunet",
        base: int = 32,
        feat_dim: int = 8,
        hidden: int = 8,
        controller: str = "outer",
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        unit_pooled: bool = False,
    ) -> None:
        # unit_pooled: the controller reads the pooled feature scaled to unit length (what training
        # writes since the ResNet-18 fix); False rebuilds segmenters saved before it unchanged
        super().__init__(
            "dynamic", classes, mean, std, encoder=encoder, base=base, feat_dim=feat_dim,
            hidden=hidden, controller=controller, unit_pooled=unit_pooled,
        )  # fmt: skip
        self.net = create_encoder_decoder(encoder, base, feat_dim)
        self.stride = self.net.stride
        self.head = DynamicHead(feat_dim, hidden, 2)
        self.controller = Controller(
            self.net.bottleneck_dim, self.num_classes, self.head.num_params, controller,
            init_head=self.head.init_params, normalise=unit_pooled,
        )  # fmt: skip

    def _run(self, x: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        feats, bott = self.net(self.normalise(x))  # (B, D, H, W), (B, C, h, w)
        params = self.controller(bott.mean(dim=(2, 3)), tasks)  # (B, T, P)
        return self.head(feats, params)  # (B, T, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tasks = torch.arange(self.num_classes, device=x.device).expand(x.shape[0], -1)  # (B, K)
        return self._run(x, tasks)  # (B, K, H, W)

    def forward_tasks(self, x: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        return self._run(x, tasks[:, None])[:, 0]  # (B, H, W)

    def probabilities(self, x: torch.Tensor, idx: Sequence[int] | None = None) -> torch.Tensor:
        sel = list(range(self.num_classes)) if idx is None else list(idx)
        tasks = torch.tensor(sel, device=x.device, dtype=torch.long).expand(x.shape[0], -1)
        return torch.sigmoid(self._run(x, tasks))  # only the requested heads are evaluated


class _SharedNetSegmenter(Segmenter):
    """A shared encoder-decoder with one plain 1x1 head of ``out_channels`` outputs."""

    def __init__(
        self,
        kind: str,
        classes: Sequence[str],
        out_extra: int,
        encoder: str,
        base: int,
        feat_dim: int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        super().__init__(kind, classes, mean, std, encoder=encoder, base=base, feat_dim=feat_dim)
        self.net = create_encoder_decoder(encoder, base, feat_dim)
        self.stride = self.net.stride
        self.head = nn.Conv2d(feat_dim, self.num_classes + out_extra, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats, _ = self.net(self.normalise(x))  # (B, D, H, W)
        return self.head(feats)


class MultiHeadSegmenter(_SharedNetSegmenter):
    """Shared encoder-decoder, one 1x1 sigmoid head per class (the multi-head baseline)."""

    def __init__(
        self,
        classes: Sequence[str],
        encoder: str = "resunet",
        base: int = 32,
        feat_dim: int = 8,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        # (B, K, H, W): one logit per class
        super().__init__("multihead", classes, 0, encoder, base, feat_dim, mean, std)


class MultiClassSegmenter(_SharedNetSegmenter):
    """One softmax over background + K classes: pixel-exclusive, cannot express "not annotated"."""

    output = "softmax"

    def __init__(
        self,
        classes: Sequence[str],
        encoder: str = "resunet",
        base: int = 32,
        feat_dim: int = 8,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        # (B, K + 1, H, W), channel 0 = background
        super().__init__("multiclass", classes, 1, encoder, base, feat_dim, mean, std)

    def forward_tasks(self, x: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        raise GlomsslError("multiclass is trained with one softmax over all classes, not per task")

    def probabilities(self, x: torch.Tensor, idx: Sequence[int] | None = None) -> torch.Tensor:
        p = torch.softmax(self.forward(x), dim=1)[:, 1:]  # (B, K, H, W)
        return p if idx is None else p[:, list(idx)]


class PerClassUNets(Segmenter):
    """One encoder-decoder + 1x1 head per class (the per-class "U-Nets" baseline): K passes."""

    def __init__(
        self,
        classes: Sequence[str],
        encoder: str = "resunet",
        base: int = 32,
        feat_dim: int = 8,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__("unet", classes, mean, std, encoder=encoder, base=base, feat_dim=feat_dim)
        self.nets = nn.ModuleList(
            create_encoder_decoder(encoder, base, feat_dim) for _ in self.classes
        )
        self.stride = self.nets[0].stride  # type: ignore[assignment]
        self.heads = nn.ModuleList(nn.Conv2d(feat_dim, 1, 1) for _ in self.classes)

    def _one(self, k: int, x: torch.Tensor) -> torch.Tensor:
        feats, _ = self.nets[k](x)
        return self.heads[k](feats)[:, 0]  # (B, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalise(x)
        return torch.stack([self._one(k, x) for k in range(self.num_classes)], dim=1)

    def forward_tasks(self, x: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        x = self.normalise(x)
        out = x.new_zeros(x.shape[0], *x.shape[2:])  # (B, H, W)
        for k in torch.unique(tasks).tolist():
            sel = tasks == k
            out[sel] = self._one(int(k), x[sel])
        return out

    def probabilities(self, x: torch.Tensor, idx: Sequence[int] | None = None) -> torch.Tensor:
        sel = list(range(self.num_classes)) if idx is None else list(idx)
        x = self.normalise(x)
        return torch.sigmoid(torch.stack([self._one(k, x) for k in sel], dim=1))


class DeepLabV3Segmenter(Segmenter):
    """torchvision DeepLabV3 (random init, no download), one sigmoid channel per class."""

    stride = 8

    def __init__(
        self,
        classes: Sequence[str],
        backbone: str = "resnet50",
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__("deeplabv3", classes, mean, std, backbone=backbone)
        from torchvision.models import segmentation as seg

        builders = {
            "resnet50": seg.deeplabv3_resnet50,
            "resnet101": seg.deeplabv3_resnet101,
            "mobilenet_v3_large": seg.deeplabv3_mobilenet_v3_large,
        }
        if backbone not in builders:
            raise GlomsslError(
                f"deeplabv3 backbone {backbone!r}: choose one of {', '.join(builders)}"
            )
        self.net = builders[backbone](
            weights=None, weights_backbone=None, num_classes=self.num_classes, aux_loss=False
        )
        self.stride = 32 if backbone == "mobilenet_v3_large" else 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalise(x))["out"]  # type: ignore[no-any-return]  # (B, K, H, W)

    def load_init(self, init: str) -> dict[str, Any]:
        raise GlomsslError(
            "--init is for the ResNet encoder-decoders; use --model dynamic/multihead/unet/"
            "multiclass with --encoder resnet18 to start from a pretraining run"
        )


_MODELS: dict[str, tuple[type[Segmenter], str]] = {
    "dynamic": (
        DynamicSegmenter,
        "GIO2 dynamic-head segmenter: one pass, all classes (classes=...)",
    ),
    "multihead": (MultiHeadSegmenter, "shared encoder-decoder, one 1x1 sigmoid head per class"),
    "multiclass": (MultiClassSegmenter, "one softmax over background + classes (naive baseline)"),
    "unet": (PerClassUNets, "one encoder-decoder per class (per-class U-Nets baseline)"),
    "deeplabv3": (DeepLabV3Segmenter, "torchvision DeepLabV3, weights=None, sigmoid per class"),
}

for _name, (_cls, _desc) in _MODELS.items():
    register_model(_name, _desc)(_cls)


def is_segmenter(module: Any) -> bool:
    return isinstance(module, Segmenter)
