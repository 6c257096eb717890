"""The optional steps of the chain behind one small interface each: classify and segment crops.

``glomssl wsi`` works with detection only. With ``--classifier RUN`` it calls the classifier's stable
API (``glomssl.finetune.classifier.infer``: ``load_classifier(path, device) -> (model, meta)`` and
``classify_images(model, meta, images, batch_size, device) -> (N, C)``); with ``--segmenter RUN`` the
segmenter's (``glomssl.finetune.segmenter.infer``: ``load_segmenter(path, device) -> (model, meta)``
and ``predict_image(model, img, idx, scale, tile, overlap, batch_size, device) -> (K, H, W)``). Both are
imported only when asked for; a missing module is a one-line error. Each step is one function here,
so wiring a changed API touches one place.

Both models were trained on glomerulus crops whose mask box is the whole crop, so both see a *view*
of each glomerulus: a square around its circle, ``view_context`` times its diameter, cut from the
fixed-size crop. The segmenter gets each view as ``glomssl segment`` gets an image (resized by
the run's ``input_scale``, tiled at its ``image_size``: :func:`model_scale`), and its mask is
resized back to the view.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from glomssl.errors import GlomsslError


@dataclass
class ClassifierStep:
    """Class names and a function from crop views (PIL images) to (N, C) probabilities."""

    classes: list[str]
    classify: Callable[[list[Any]], np.ndarray]
    path: str


@dataclass
class SegmenterStep:
    """A function from crop views (RGB arrays) to boolean masks of the same size."""

    segment: Callable[[list[np.ndarray]], list[np.ndarray]]
    class_name: str
    path: str


def check_classes(classes: Any, path: str) -> list[str]:
    """The classifier's class names, or a one-line error when they cannot name XML layers."""
    if not isinstance(classes, list | tuple) or not classes:
        raise GlomsslError(f"--classifier {path} does not list its classes; re-export it")
    names = [str(c) for c in classes]
    if len(set(names)) != len(names) or any(not n.strip() for n in names):
        raise GlomsslError(f"--classifier {path} has empty or repeated class names: {names}")
    return names


def load_classifier_step(path: str, device: str, batch: int = 32) -> ClassifierStep:
    """The ``--classifier`` step (a ``glomssl finetune cls`` run folder or its weights)."""
    try:
        from glomssl.finetune.classifier.infer import classify_images, load_classifier
    except ImportError as exc:
        raise GlomsslError(
            "--classifier needs glomssl's classifier module (glomssl finetune cls), which this "
            "installation lacks; update glomssl or run without --classifier"
        ) from exc
    model, meta = load_classifier(path, device)
    classes = check_classes(meta.get("classes"), path)

    def classify(views: list[Any]) -> np.ndarray:
        if not views:
            return np.zeros((0, len(classes)), np.float32)
        probs = np.asarray(classify_images(model, meta, views, batch, device), dtype=np.float32)
        if probs.shape != (len(views), len(classes)):
            raise GlomsslError(
                f"--classifier {path} returned {probs.shape[-1]} probabilities per crop for "
                f"{len(classes)} classes ({', '.join(classes)}); its classes do not match its output"
            )
        return probs

    return ClassifierStep(classes, classify, str(path))


def model_scale(meta: dict[str, Any]) -> tuple[float, int, int]:
    """(input scale, tile, overlap) at which ``glomssl segment`` runs a segmenter on images.

    As :mod:`glomssl.finetune.segmenter.predict` without ``--scale``/``--tile``/``--overlap``:
    the image is resized by the run's ``input_scale`` (its training images' working size over
    their short side) and cut into tiles of its ``image_size`` overlapping by an eighth, so a view
    of a glomerulus reaches the network at the size its training crops had.
    """
    scale = float(meta.get("input_scale", 1.0))
    tile = int(meta.get("image_size", 512))
    return scale, tile, (tile // 8) // 2 * 2


def load_segmenter_step(
    path: str,
    device: str,
    class_name: str | None = None,
    threshold: float = 0.5,
    batch: int = 4,
) -> SegmenterStep:
    """The ``--segmenter`` step: a ``glomssl finetune seg`` run; ``class_name`` picks its class."""
    try:
        from glomssl.finetune.segmenter.infer import load_segmenter, predict_image
    except ImportError as exc:
        raise GlomsslError(
            "--segmenter needs glomssl's segmenter module (glomssl finetune seg), which this "
            "installation lacks; update glomssl or run without --segmenter"
        ) from exc
    model, meta = load_segmenter(path, device, flag="--segmenter")
    names = [str(c) for c in meta.get("classes", [])]
    if not names:
        raise GlomsslError(f"--segmenter {path} does not list its classes; re-export it")
    pick = class_name or names[0]
    if pick not in names:
        raise GlomsslError(
            f"--segment-class {pick!r} is not a class of --segmenter {path}; it has {', '.join(names)}"
        )
    idx = [names.index(pick)]
    scale, tile, overlap = model_scale(meta)

    def segment(views: list[np.ndarray]) -> list[np.ndarray]:
        out = []
        for v in views:
            # resized by the model's scale, tiled at its working size, back at the view's size
            probs = predict_image(model, v, idx, scale, tile, overlap, batch, device)  # (1, H, W)
            out.append(central_component(np.asarray(probs[0]) > threshold))
        return out

    return SegmenterStep(segment, pick, str(path))


def central_component(mask: np.ndarray) -> np.ndarray:
    """The connected component of a crop's mask nearest its centre (the detected glomerulus)."""
    import cv2

    n, lab = cv2.connectedComponents(mask.astype(np.uint8))
    if n <= 2:
        return mask.astype(bool)
    h, w = mask.shape
    ys, xs = np.nonzero(lab)
    d = (ys - h / 2) ** 2 + (xs - w / 2) ** 2
    return np.asarray(lab == lab[ys[int(np.argmin(d))], xs[int(np.argmin(d))]])
