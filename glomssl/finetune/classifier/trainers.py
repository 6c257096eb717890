"""One interface over the three protocols, so the cross-validation loop does not care which runs.

``linear`` embeds every image once with the frozen backbone (cached in ``RUN/features.npz``) and fits a
linear layer per fold; ``finetune`` and ``scratch`` train the whole network per fold
(:mod:`glomssl.finetune.classifier.network`). Either way a fold yields a :class:`Fit` that can score
images and be exported as the same :class:`~glomssl.finetune.classifier.model.Classifier` file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glomssl.finetune.classifier.data import LabelledSet
from glomssl.finetune.classifier.linear import LinearFit
from glomssl.finetune.classifier.model import Classifier


@dataclass
class Fit:
    best_epoch: int
    val: dict[str, Any]
    linear: LinearFit | None = None
    model: Classifier | None = None


class Trainers:
    """Holds the data, the images in memory and (linear mode) the frozen features of one run."""

    def __init__(self, cfg: Any, data: LabelledSet, out: Path) -> None:
        from glomssl.finetune.classifier.model import build_classifier

        self.cfg = cfg
        self.data = data
        self.out = out
        self.num_classes = len(data.classes)
        model, self.backbone_info = build_classifier(self.num_classes, cfg.arch, cfg.backbone_path)
        self.arch = str(self.backbone_info["arch"])
        pre = self.backbone_info.get("pretrain_image_size")
        self.image_size = int(cfg.image_size or pre or 224)
        self.base_model = model  # linear: the frozen network whose head each fold replaces
        self.images: torch.Tensor | None = None
        self.features: np.ndarray | None = None
        self.device = "cuda" if cfg.hardware.on_gpu() else "cpu"

    # -- data -------------------------------------------------------------------------------------
    def prepare_inputs(self) -> None:
        """Load the images into memory; linear mode: embed them once (or reuse RUN/features.npz)."""
        from glomssl.finetune.classifier.linear import (
            cached_features,
            embed,
            features_key,
            load_images,
        )

        cfg = self.cfg

        def images() -> torch.Tensor:
            if self.images is None:
                self.images = load_images(
                    self.data.paths, self.image_size, max(1, cfg.workers), cfg.quiet
                )
            return self.images

        if cfg.mode != "linear":
            images()
            return
        key = features_key(self.backbone_info["source"], self.image_size, self.data.paths)
        model = self.base_model.to(self.device)
        self.features, hit = cached_features(
            self.out / "features.npz", key, lambda: embed(model, images(), 128, self.device)
        )
        self.base_model = model.cpu()
        if hit and not cfg.quiet:
            import sys

            print("frozen features: reusing RUN/features.npz", file=sys.stderr)

    def _loss_setup(self, sub: np.ndarray) -> tuple[float, torch.Tensor | None, np.ndarray | None]:
        from glomssl.finetune.classifier.loss import balanced_weights

        gamma = self.cfg.focal_gamma if self.cfg.loss == "focal" else 0.0
        y = self.data.labels[sub]
        if self.cfg.balance == "weights":
            return gamma, balanced_weights(y, self.num_classes), None
        if self.cfg.balance == "sampler":
            return gamma, None, (1.0 / np.bincount(y, minlength=self.num_classes)[y])
        return gamma, None, None

    # -- training ---------------------------------------------------------------------------------
    def fit(self, sub: np.ndarray, va: np.ndarray, fold: int | str) -> Fit:
        import lightning as L

        cfg = self.cfg
        seed = cfg.seed + (fold if isinstance(fold, int) else 1000)
        L.seed_everything(seed, workers=True, verbose=False)
        gamma, weight, sample_w = self._loss_setup(sub)
        y = self.data.labels
        if cfg.mode == "linear":
            from glomssl.finetune.classifier.linear import fit_linear
            from glomssl.runs import MetricsLogger

            assert self.features is not None
            x = self.features
            train = sub
            if sample_w is not None:  # class-balanced resampling of the (fixed) training features
                rng = np.random.default_rng(seed)
                train = rng.choice(sub, size=len(sub), p=sample_w / sample_w.sum())
            logger = MetricsLogger(self.out / "metrics.jsonl")
            lf = fit_linear(
                x[train], y[train], x[va], y[va], self.num_classes,
                epochs=cfg.n_epochs, lr=cfg.base_lr, weight_decay=cfg.weight_decay,
                batch_size=cfg.batch_size, gamma=gamma, class_weight=weight, seed=seed,
                log=lambda row: logger.log(fold=fold, **row),
            )  # fmt: skip
            return Fit(lf.best_epoch, lf.val, linear=lf)
        from glomssl.finetune.classifier.loss import FocalLoss
        from glomssl.finetune.classifier.metrics import evaluate
        from glomssl.finetune.classifier.model import build_classifier
        from glomssl.finetune.classifier.network import train_network

        assert self.images is not None
        model, _ = build_classifier(self.num_classes, cfg.arch, cfg.backbone_path)
        trained, best_epoch = train_network(
            model, self.images, y, sub, va,
            loss=FocalLoss(gamma, weight), hardware=cfg.hardware, out=self.out,
            epochs=cfg.n_epochs, lr=cfg.base_lr,
            backbone_lr_scale=cfg.backbone_lr_scale if cfg.mode == "finetune" else 1.0,
            weight_decay=cfg.weight_decay, batch_size=cfg.batch_size,
            sampler_weights=sample_w, workers=min(cfg.workers, 2), static={"fold": fold},
            quiet=cfg.quiet,
        )  # fmt: skip
        fit = Fit(best_epoch, {}, model=trained)  # type: ignore[arg-type]
        fit.val = evaluate(y[va], self.probs(fit, va))
        return fit

    # -- scoring and export -----------------------------------------------------------------------
    @torch.no_grad()
    def probs(self, fit: Fit, idx: np.ndarray) -> np.ndarray:
        """Class probabilities (n, C) of the images ``idx``."""
        from glomssl.finetune.classifier.linear import linear_probs

        if len(idx) == 0:
            return np.zeros((0, self.num_classes), dtype=np.float32)
        if fit.linear is not None:
            assert self.features is not None
            return linear_probs(fit.linear, self.features[idx])
        assert fit.model is not None and self.images is not None
        model = fit.model.to(self.device).eval()
        out = []
        for i in range(0, len(idx), 128):
            x = self.images[idx[i : i + 128]].to(self.device).float().div_(255)
            out.append(torch.softmax(model(x).float(), 1).cpu().numpy())
        fit.model = model.cpu()
        return np.concatenate(out)

    def evaluate(self, fit: Fit, idx: np.ndarray) -> dict[str, Any]:
        from glomssl.finetune.classifier.metrics import evaluate

        return evaluate(self.data.labels[idx], self.probs(fit, idx))

    def classifier(self, fit: Fit) -> Classifier:
        if fit.model is not None:
            return fit.model
        assert fit.linear is not None
        model = self.base_model
        with torch.no_grad():
            model.head.weight.copy_(torch.from_numpy(fit.linear.weight))
            model.head.bias.copy_(torch.from_numpy(fit.linear.bias))
        return model

    def export(self, fit: Fit, path: Path, extra: dict[str, Any]) -> Path:
        from glomssl.config import to_dict
        from glomssl.finetune.classifier.model import export_classifier

        meta = {
            "classes": self.data.classes,
            "arch": self.arch,
            "image_size": self.image_size,
            "mode": self.cfg.mode,
            "label_fraction": self.cfg.label_fraction,
            "backbone": self.backbone_info,
            "config": to_dict(self.cfg),
            **extra,
        }
        return export_classifier(self.classifier(fit), path, meta)
