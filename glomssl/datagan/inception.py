"""Standard FID/KID features: Inception-v3 pool3 activations from user-provided local weights.

glomssl downloads nothing, so the user supplies the weights file (``--metric-inception FILE``): a
torchvision ``inception_v3`` state dict saved with ``torch.save`` (``.pth``/``.pt``), or the same
tensors as ``.safetensors``. The network is torchvision's ``Inception3`` built with
``inception_v3(weights=None, aux_logits=False, init_weights=False)`` and its final ``fc`` replaced by
an identity, so a forward pass in eval mode returns the 2048-d average-pooled "pool3" activations that
FID and KID are defined on. The auxiliary classifier (``AuxLogits.*``) and ``fc.*`` keys of the file
are dropped; every other key must be present with the right shape (strict loading).

Preprocessing: images in [0, 1] are resized to 299 x 299 (bilinear, ``align_corners=False``, no
antialiasing, as pytorch-fid does) and mapped to [-1, 1]. That is exactly what torchvision's own
pipeline for these weights feeds the convolutions: ``inception_v3(weights="DEFAULT")`` sets
``transform_input=True``, whose ``_transform_input`` turns an ImageNet-normalised input
``(x - mean) / std`` back into ``(x - 0.5) / 0.5`` (the Google weights were trained on [-1, 1]
inputs). Here the network is built with ``transform_input=False`` and given ``2 x - 1`` directly.

Caveat: pytorch-fid and StyleGAN report FID with the TF-ported "pt_inception-2015-12-05" weights,
which are a different set of Inception weights than torchvision's ImageNet ones. FIDs from
torchvision's weights come close to, but do not equal, those published numbers: they are comparable
within glomssl (same weights file) and only approximately with papers.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glomssl.datagan.fid import MetricEncoder
from glomssl.errors import GlomsslError

INCEPTION_SIZE = 299
FEATURE_DIM = 2048
_DROPPED = ("AuxLogits.", "fc.")
_FIX = (
    "save torchvision's inception_v3(weights='DEFAULT').state_dict() with torch.save "
    "(see README, gan metrics)"
)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file or a torch.save'd state dict (weights_only: no unpickling of
    arbitrary objects); one-line GlomsslError naming the file otherwise."""
    if not path.is_file():
        raise GlomsslError(f"--metric-inception {path} does not exist; {_FIX}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path)))
        except (SafetensorError, OSError, ValueError) as exc:
            raise GlomsslError(
                f"--metric-inception {path} is not a readable safetensors file ({exc}); {_FIX}"
            ) from exc
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # garbage, or objects other than tensors
        raise GlomsslError(
            f"--metric-inception {path} is not a torch.save'd state dict of plain tensors (only "
            f"weights-only files are read); {_FIX}"
        ) from exc
    except Exception as exc:  # torch.load raises many types (RuntimeError, EOFError, ...)
        first = str(exc).strip().splitlines()[0][:150] if str(exc).strip() else ""
        raise GlomsslError(
            f"--metric-inception {path} is not a readable torch state dict "
            f"({first or type(exc).__name__}); {_FIX}"
        ) from exc
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]  # a checkpoint wrapping the state dict
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise GlomsslError(
            f"--metric-inception {path} holds no state dict of tensors (a {type(obj).__name__}); "
            f"{_FIX}"
        )
    return obj


def load_inception(path: str | os.PathLike[str]) -> torch.nn.Module:
    """Inception-v3 trunk (fc = identity, eval mode, on CPU) with the weights of ``path``."""
    from torchvision.models import inception_v3

    src = Path(path)
    state = {k: v for k, v in _read_state_dict(src).items() if not k.startswith(_DROPPED)}
    model = inception_v3(weights=None, aux_logits=False, init_weights=False)
    model.fc = torch.nn.Identity()  # type: ignore[assignment]
    expected = model.state_dict()
    problems = []
    for what, keys in (
        ("missing", [k for k in expected if k not in state]),
        ("unexpected", [k for k in state if k not in expected]),
        (
            "wrong shape",
            [k for k in expected if k in state and state[k].shape != expected[k].shape],
        ),
    ):
        if keys:
            problems.append(f"{len(keys)} {what} key(s), e.g. {keys[0]}")
    if problems:
        raise GlomsslError(
            f"--metric-inception {src} does not match torchvision's inception_v3 "
            f"({'; '.join(problems)}); {_FIX}"
        )
    model.load_state_dict(state, strict=True)
    return model.eval().requires_grad_(False)


class InceptionEncoder(MetricEncoder):
    """2048-d Inception-v3 pool3 features of images in [0, 1], for standard FID/KID.

    Same feature methods as :class:`MetricEncoder` (``features``, ``dataset_features``,
    ``generator_features``), so :class:`~glomssl.datagan.metrics.MetricState` uses either.
    ``source`` is a weights file (see the module docstring) or an ``nn.Module`` that already is
    such a trunk.
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | torch.nn.Module,
        device: str = "cpu",
        batch: int = 32,
    ) -> None:
        model = source if isinstance(source, torch.nn.Module) else load_inception(source)
        self.model = model.to(device).eval()
        self.device = device
        self.image_size = INCEPTION_SIZE
        self.batch = batch

    @torch.no_grad()
    def features(self, images01: torch.Tensor) -> np.ndarray:
        """(B, 3, H, W) in [0, 1] -> (B, 2048) float32 pool3 features."""
        x = images01.to(self.device).float()
        if x.shape[-2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
            x = torch.nn.functional.interpolate(
                x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False
            )
        out: Any = self.model(x * 2 - 1)
        return torch.as_tensor(out).reshape(x.shape[0], -1).float().cpu().numpy()
