"""The classifier network, its input preparation, and its file format.

Glo-In-One's classifier is a ResNet trunk, global average pooling and one linear layer; the three
protocols differ only in what trains (the layer alone, everything, or everything from random init).
:class:`Classifier` takes images (B, 3, S, S) in [0, 1], normalises them with the encoder's own
statistics (kept as buffers, so an exported model carries them), and returns logits (B, C).

Images are prepared one way everywhere (:func:`prepare`): decoded to RGB and resized, whole, to
S x S with antialiasing, as Glo-In-One resizes its crops and as ``glomssl embed`` does.

The export is ``model.safetensors`` (the whole network) plus ``model.json`` (``kind:
glomssl-classifier``, classes, arch, image size, normalisation, how it was trained).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from glomssl.errors import GlomsslError
from glomssl.models.backbones import IMAGENET_MEAN, IMAGENET_STD, ResNetTrunk

KIND = "glomssl-classifier"


class Classifier(nn.Module):
    """normalise -> ResNet trunk -> global average pool -> linear: (B,3,S,S) in [0,1] -> (B, C)."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        trunk: ResNetTrunk,
        num_classes: int,
        mean: list[float] | tuple[float, ...] = IMAGENET_MEAN,
        std: list[float] | tuple[float, ...] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = nn.Linear(trunk.feature_dim, num_classes)
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [0, 1] -> (B, D) pooled trunk features."""
        return self.trunk((x - self.mean) / self.std)  # type: ignore[no-any-return]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # type: ignore[no-any-return]  # (B, C) logits


def build_classifier(
    num_classes: int, arch: str = "resnet18", backbone: str | os.PathLike[str] | None = None
) -> tuple[Classifier, dict[str, Any]]:
    """A classifier on a pretrained encoder (``backbone``: run folder or .safetensors) or at random.

    Returns the model and a description of the backbone (its file, arch, pretraining method).
    """
    if backbone is None:
        return Classifier(ResNetTrunk(arch), num_classes), {"source": None, "arch": arch}
    from glomssl.models.encoder import load_backbone, resolve_weights
    from glomssl.runs import WeightsKindError

    try:
        enc, meta = load_backbone(backbone, flag="--backbone")
    except WeightsKindError:  # already names --backbone, what the file is and where it goes
        raise
    except GlomsslError as exc:
        raise GlomsslError(
            f"--backbone {backbone} is not a glomssl encoder ({str(exc).rstrip('.')}); pass a "
            "`glomssl pretrain` run folder or its backbone.safetensors"
        ) from exc
    e: Any = enc
    model = Classifier(e.trunk, num_classes, e.mean.flatten().tolist(), e.std.flatten().tolist())
    info = {
        "source": str(resolve_weights(backbone)),
        "arch": str(meta["arch"]),
        "method": meta.get("method"),
        "steps": meta.get("step"),
        "pretrain_image_size": meta.get("image_size"),
    }
    return model, info


def to_tensor(image: Any) -> torch.Tensor:
    """A path or PIL image -> uint8 tensor (3, H, W) (RGB; 16-bit and alpha handled by load_rgb)."""
    from PIL import Image

    from glomssl.data.images import load_rgb

    if isinstance(image, Image.Image):
        im = image.convert("RGB")
    elif isinstance(image, str | os.PathLike):
        im = load_rgb(image)
    else:
        raise GlomsslError(
            f"cannot classify a {type(image).__name__}; pass image paths or PIL images"
        )
    arr = np.asarray(im, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)  # (3, H, W)


def prepare(image: Any, size: int) -> torch.Tensor:
    """A path or PIL image -> uint8 tensor (3, size, size): the whole image resized with antialias."""
    from torchvision.transforms.v2 import functional as TF

    x = to_tensor(image)
    if tuple(x.shape[1:]) != (size, size):
        x = TF.resize(x, [size, size], antialias=True)
    return x  # (3, S, S) uint8


def export_classifier(
    model: Classifier, path: str | os.PathLike[str], meta: dict[str, Any]
) -> Path:
    """Write ``model.safetensors`` + ``model.json`` (refuses NaN/inf weights)."""
    from glomssl.engine.trainer import check_finite_state
    from glomssl.runs import save_weights

    check_finite_state(model, "the classifier")
    info = {
        "kind": KIND,
        "mean": model.mean.flatten().tolist(),
        "std": model.std.flatten().tolist(),
        "num_classes": int(model.head.out_features),
        "feature_dim": int(model.head.in_features),
        **meta,
    }
    state = {k: v for k, v in model.state_dict().items() if k not in ("mean", "std")}
    return save_weights(path, state, info, kind="classifier")


def _checked_meta(path: Path, meta: dict[str, Any]) -> list[str]:
    """The class names of a classifier's model.json, after checking the keys the loader reads."""
    from glomssl.models.backbones import ARCHS

    classes = meta.get("classes")
    if not isinstance(classes, list) or not all(isinstance(c, str | int) for c in classes):
        raise GlomsslError(f"{path}: its model.json lists no classes; re-export the classifier")
    if meta.get("arch") not in ARCHS:
        raise GlomsslError(
            f"{path}: its model.json names no known arch ({meta.get('arch')!r}; glomssl has "
            f"{', '.join(ARCHS)}); restore the run's model.json or re-export it"
        )
    for key in ("mean", "std"):
        v = meta.get(key)
        if not (
            isinstance(v, list)
            and len(v) == 3
            and all(isinstance(x, int | float) and not isinstance(x, bool) for x in v)
        ):
            raise GlomsslError(
                f"{path}: its model.json `{key}` is not 3 numbers; restore it or re-export the model"
            )
    size = meta.get("image_size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise GlomsslError(
            f"{path}: its model.json `image_size` is {size!r}, not a positive whole number; restore "
            "it or re-export the model"
        )
    return [str(c) for c in classes]


def load_classifier_file(
    path: str | os.PathLike[str], device: str = "cpu"
) -> tuple[Classifier, dict[str, Any]]:
    """Load an exported classifier (run folder or model.safetensors) in eval mode."""
    from glomssl.runs import load_weights

    p = Path(path)
    if p.is_dir():
        p = p / "model.safetensors"
        if not p.is_file():
            raise GlomsslError(
                f"{path} holds no model.safetensors; is it a `glomssl finetune cls` run?"
            )
    tensors, meta = load_weights(p, expect="classifier")
    if meta.get("kind") != KIND or not meta.get("classes"):
        raise GlomsslError(
            f"{p} is not a glomssl classifier (its model.json lacks kind: {KIND}); pass the "
            "model.safetensors that `glomssl finetune cls` exported"
        )
    classes = _checked_meta(p, meta)
    model = Classifier(ResNetTrunk(str(meta["arch"])), len(classes), meta["mean"], meta["std"])
    head = tensors.get("head.weight")
    if head is not None and tuple(head.shape[:1]) != (len(classes),):
        raise GlomsslError(
            f"{p}: its model.json names {len(classes)} classes but the weights have "
            f"{int(head.shape[0])} outputs; restore the run's model.json or re-export it"
        )
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if k not in ("mean", "std")]
    if missing or unexpected:
        raise GlomsslError(
            f"{p} does not match a {meta['arch']} classifier with {len(classes)} classes "
            f"(missing {missing[:2]}, unexpected {unexpected[:2]}); re-export it"
        )
    return model.to(device).eval(), meta
