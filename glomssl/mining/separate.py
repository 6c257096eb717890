"""Split compound figures into panels: ``glomssl separate``.

Five methods (:data:`METHODS`):

- ``classic``: recursive XY cuts on the figure's whitespace (:mod:`glomssl.mining.classic`); no model.
- ``yolo``: the panel detector of :mod:`glomssl.mining.yolo` (shipped weights, trained on synthetic
  compound figures, the SimCFS / Glo-In-One recipe), its boxes trimmed to the figure's ink.
- ``hybrid``: classic cuts split and merged where the detector says so (:mod:`glomssl.mining.hybrid`).
- ``guided``: classic cuts, plus the hairline cuts of ``--seams`` (one-pixel gutters, seams of
  touching pictures) where the detector confirms the parts, else its own boxes' colour edges, unless the parts are one lettered panel; otherwise exactly classic. ``auto``
  runs it.
- ``auto`` (the default): the method that won the comparison recorded in
  docs/experiments/panel-detector.md (:data:`AUTO_METHOD`).

Whatever the method, a figure with fewer than two panels yields one panel: the figure trimmed of its
empty margins.

:func:`run_separate` reads a FOLDER or MANIFEST and writes ``DIR/panels/*.png``,
``DIR/manifest.jsonl`` (one row per panel with ``parent`` (relative to the manifest, like ``path``),
``bbox``, ``score``, ``method`` and the parent's provenance), ``DIR/failures.jsonl`` (unreadable inputs)
and optional ``DIR/previews``. Progress lives in ``DIR/separate.sqlite``: a rerun skips figures already
done, and a crash loses at most the figure in flight. One run at a time may work in a folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import math
import os
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from glomssl.config import opt
from glomssl.data.images import is_jpeg
from glomssl.errors import GlomsslError
from glomssl.fsutil import (
    atomic_write_bytes,
    ensure_writable_dir,
    folder_lock,
    refuse_out_is_input,
    sha256_bytes,
)
from glomssl.manifest import Row, load_image_list, relpath, write_jsonl, write_manifest
from glomssl.mining.boxes import (
    Box,
    Scored,
    area,
    inter,
    iou,
    merge_windows,
    prf1,
    strip_windows,
)
from glomssl.mining.classic import (
    DEFAULT_CLASSIC,
    RINGING_PALE,
    ClassicParams,
    Gutters,
    background_colour,
    classic_boxes,
    clean_boxes,
    grow_pale,
    ink_mask,
    leaves,
    off_background,
    size_limit,
    whole_figure,
)
from glomssl.mining.folder_stage import check_not_overwriting
from glomssl.mining.hybrid import (
    HybridParams,
    flat_line,
    guided_boxes,
    hybrid_boxes,
    join_pale,
    join_plot_labels,
    lane_piece,
    narrow_plot,
    one_lettered_panel,
    rescue_lost,
    text_line,
    tiny_picture,
    titled_lane,
)
from glomssl.mining.shaded import fill_shaded

__all__ = [
    "AUTO_METHOD",
    "METHODS",
    "Box",
    "SeparateConfig",
    "Separator",
    "iou",
    "prf1",
    "run_separate",
]

METHODS = ("auto", "guided", "hybrid", "yolo", "classic")
#: what ``--method auto`` runs: the winner under the rule of docs/experiments/panel-detector.md.
#: Sections 12-15: guided with panel letters respected and the detector's own splits where hairline
#: cuts are missing or unconfirmed (the shipped sidecar's settings) scored F1 0.872 on the held-out synthetic layouts
#: against 0.788 for classic, and 0.901 on the 14 real exsclaim figures, not below classic's: the
#: first detector method to pass the real-figure veto.
AUTO_METHOD = "guided"
#: detector confidence per method when neither --conf nor the weights' sidecar gives one
DEFAULT_CONF = {"yolo": 0.25, "hybrid": 0.15, "guided": 0.25}
#: the detector's non-maximum suppression overlap when neither --iou nor the sidecar gives one
DEFAULT_IOU = 0.5
_OWN_FIELDS = {"path", "sha256", "width", "height", "parent", "bbox", "score", "method", "mask"}


def resolve_method(method: str) -> str:
    """The method that runs: ``auto`` becomes :data:`AUTO_METHOD`."""
    if method not in METHODS:
        raise GlomsslError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    return AUTO_METHOD if method == "auto" else method


def _sidecar(weights: str | None) -> str:
    """How error messages name the sidecar of ``weights``."""
    return str(Path(weights).with_suffix(".json")) if weights is not None else "the shipped sidecar"


def _method_block(method: str, weights: str | None) -> dict[str, Any]:
    """The sidecar's ``separate.<method>`` settings of ``weights`` ({} when absent or classic)."""
    from glomssl.mining.yolo import weights_meta

    tuned = weights_meta(weights).get("separate", {}) if method != "classic" else {}
    own = tuned.get(method, {}) if isinstance(tuned, dict) else {}
    return own if isinstance(own, dict) else {}


def tuned_settings(method: str, weights: str | None = None) -> tuple[float, HybridParams]:
    """Detector confidence and hybrid thresholds for ``method`` with ``weights``.

    Thresholds belong to the weights they were set for: a sidecar may carry them as
    ``"separate": {"yolo": {"conf": ...}, "hybrid": {"conf": ..., "member": ...}}`` (the shipped one
    does, with the values chosen on the tuning set of docs/experiments/panel-detector.md). Missing
    values fall back to :data:`DEFAULT_CONF` and :class:`HybridParams`' defaults.
    """
    own = _method_block(method, weights)
    names = {f.name for f in dataclasses.fields(HybridParams)}
    values: dict[str, float] = {}
    for k, v in own.items():
        if k not in names:
            continue
        number = v if isinstance(v, (int, float)) and not isinstance(v, bool) else None
        if number is None or not math.isfinite(number) or number < 0:
            raise GlomsslError(
                f"{_sidecar(weights)}: separate.{method}.{k} must be a finite number >= 0, "
                f"got {v!r}; fix or delete that value"
            )
        values[k] = float(number)
    if not 0.0 < values.get("pale_share", 0.6) <= 1.0:  # 0 would let boxes grow across gutters
        raise GlomsslError(
            f"{_sidecar(weights)}: separate.{method}.pale_share must be above 0 and at most 1, "
            f"got {values['pale_share']!r}; fix or delete that value"
        )
    ringing = values.get("ringing", 0.0)
    if ringing and not 30 < ringing <= 255:  # at the ink mask's 30 or under it would never act
        raise GlomsslError(
            f"{_sidecar(weights)}: separate.{method}.ringing must be 0 (off) or above 30 and at "
            f"most 255 grey levels, got {ringing!r}; fix or delete that value"
        )
    reach = values.get("ridge_reach", 0.0)
    if reach != round(reach) or reach > 3:  # whole lines; further out is another picture
        raise GlomsslError(
            f"{_sidecar(weights)}: separate.{method}.ridge_reach must be a whole number of lines "
            f"from 0 to 3, got {reach!r}; fix or delete that value"
        )
    shares = (
        "tiny_fill",
        "label_member",
        "strokes",
        "text_run",
        "plot_small",
        "plot_labels",
        "ridge",
        "rescue",
        "hairline_plots",
        "valley",
        "lane_axis",
        "lane_title",
        "lane_x",
        "lane_label",
        "lane_join",
        "shaded",
    )
    for share in shares:  # above 1 would quietly act as off
        if values.get(share, 0.0) > 1.0:
            raise GlomsslError(
                f"{_sidecar(weights)}: separate.{method}.{share} must be at most 1, "
                f"got {values[share]!r}; fix or delete that value"
            )
    conf = values.pop("conf", DEFAULT_CONF.get(method, 0.25))
    return conf, HybridParams(conf=conf, **values)


def tuned_iou(method: str, weights: str | None = None) -> float:
    """The detector's non-maximum suppression overlap for ``method`` with ``weights``: the
    sidecar's ``separate.<method>.iou``, in (0, 1] (section 44 of the diary), else
    :data:`DEFAULT_IOU`. Two boxes overlapping more than this are one detection."""
    v = _method_block(method, weights).get("iou")
    if v is None:
        return DEFAULT_IOU
    if (
        isinstance(v, bool)
        or not isinstance(v, int | float)
        or not (math.isfinite(v) and 0 < v <= 1)
    ):
        raise GlomsslError(
            f"{_sidecar(weights)}: separate.{method}.iou must be a number in (0, 1], got {v!r}; "
            "fix or delete that value"
        )
    return float(v)


def letterbox_rect(meta: dict[str, Any], weights: str | None) -> bool:
    """Whether the detector sees each figure padded to its own rectangle (stride multiple) rather
    than to a square: the sidecar's ``separate.rect`` (false when absent). A figure twice as wide
    as high then costs about half the pixels; weights opt in because their thresholds were chosen
    one way or the other (docs/experiments/panel-detector.md, section 23)."""
    block = meta.get("separate")
    rect = block.get("rect", False) if isinstance(block, dict) else False
    if not isinstance(rect, bool):
        raise GlomsslError(
            f"{_sidecar(weights)}: separate.rect must be true or false, got {rect!r}; fix it"
        )
    return rect


def _sidecar_number(
    meta: dict[str, Any], key: str, weights: str | None, fits: Any, wanted: str
) -> float:
    """The number ``separate.<key>`` of a weights' sidecar (0 when absent), refused with one line
    naming the sidecar and ``wanted`` when it is not a finite number for which ``fits`` holds."""
    block = meta.get("separate")
    value = block.get(key, 0) if isinstance(block, dict) else 0
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or not fits(value):
        raise GlomsslError(
            f"{_sidecar(weights)}: separate.{key} must be {wanted}, got {value!r}; fix it"
        )
    return float(value)


def strip_ratio(meta: dict[str, Any], weights: str | None) -> float:
    """The sidecar's ``separate.windows`` (0 when absent): a figure whose long side is more than
    this many times its short side is shown to the detector in overlapping windows of that aspect
    (:func:`glomssl.mining.boxes.strip_windows`), not shrunk whole (section 28 of the diary)."""
    return _sidecar_number(
        meta, "windows", weights, lambda v: v == 0 or v >= 1, "0 (off) or a number >= 1"
    )


def windows_for(weights: str | None) -> float:
    """:func:`strip_ratio` of the sidecar of ``weights`` (the shipped ones when None)."""
    from glomssl.mining.yolo import weights_meta

    return strip_ratio(weights_meta(weights), weights)


def ink_stretch(meta: dict[str, Any], weights: str | None) -> float:
    """The sidecar's ``separate.stretch`` (0 when absent): the darkest ink the detector should see
    (0-255). A figure whose darkest ink is paler than this is shown to the detector darkened
    towards it, white kept white (:func:`stretch_ink`; section 31 of the diary)."""
    return _sidecar_number(
        meta, "stretch", weights, lambda v: 0 <= v < 255, "0 (off) or a grey level in (0, 255)"
    )


def stretch_for(weights: str | None) -> float:
    """:func:`ink_stretch` of the sidecar of ``weights`` (the shipped ones when None)."""
    from glomssl.mining.yolo import weights_meta

    return ink_stretch(weights_meta(weights), weights)


def mean_grey(arr: np.ndarray) -> np.ndarray:
    """(H, W) float64 mean of the channels of (H, W, C) uint8 ``arr``, equal to
    ``arr.mean(axis=2)`` (the channel sums are exact in uint16) and several times faster."""
    total = arr[:, :, 0].astype(np.uint16)
    for c in range(1, arr.shape[2]):
        total += arr[:, :, c]
    return total / arr.shape[2]


def stretch_ink(arr: np.ndarray, level: float) -> np.ndarray:
    """``arr`` (H, W, 3 uint8) with its ink darkened so that its darkest 2% of ink (pixels under
    grey 235) reach ``level``, by scaling every pixel's distance from white; returned as is when
    its ink is already that dark, when it has under 100 ink pixels, or when ``level`` is 0. Pale
    stains (faint IHC, washed-out scans) then reach the detector with the contrast it was trained
    on; the boxes it returns are in the same pixels."""
    if level <= 0:
        return arr
    grey = mean_grey(arr)  # (H, W)
    ink = grey[grey < 235]
    if ink.size < 100:
        return arr
    darkest = float(np.percentile(ink, 2))
    if darkest <= level:
        return arr
    gain = (255.0 - level) / (255.0 - darkest)
    out = 255.0 - (255.0 - arr.astype(np.float32)) * gain
    return np.clip(out, 0, 255).astype(np.uint8)


def zoom_ratio(meta: dict[str, Any], weights: str | None) -> float:
    """The sidecar's ``separate.zoom`` (0 when absent): a panel ``guided`` returns that is at
    least this many times as long as it is high (or high as wide) is separated again on its own,
    closer (section 36 of the diary)."""
    return _sidecar_number(
        meta, "zoom", weights, lambda v: v == 0 or v >= 1, "0 (off) or a number >= 1"
    )


def hint_share(meta: dict[str, Any], weights: str | None) -> float:
    """The sidecar's ``separate.zoom_hint`` (0 when absent): with ``zoom``, a long panel is looked
    at again only when a detector box found at the figure's scale lies at least this share inside
    it without being it (IoU < 0.5): the detector saw a smaller panel there (section 37). 0: every
    long panel is looked at again (section 36)."""
    return _sidecar_number(meta, "zoom_hint", weights, lambda v: 0 <= v <= 1, "a number in [0, 1]")


def part_cap(meta: dict[str, Any], weights: str | None) -> float:
    """The sidecar's ``separate.zoom_cap`` (0 when absent): with ``zoom_hint``, zooming may cut a
    long panel into at most this many more parts than the detector boxes that hinted at it
    (section 38); 0: any number (section 37)."""
    return _sidecar_number(
        meta, "zoom_cap", weights, lambda v: v == int(v) and v >= 0, "a whole number >= 0"
    )


def hint_conf(meta: dict[str, Any], weights: str | None) -> float:
    """The sidecar's ``separate.zoom_conf`` (0 when absent): with ``zoom_hint``, only detector
    boxes at least this confident hint (section 39); 0: every box guided keeps (its ``conf``)."""
    return _sidecar_number(meta, "zoom_conf", weights, lambda v: 0 <= v <= 1, "a number in [0, 1]")


def zoom_letter_guard(meta: dict[str, Any], weights: str | None) -> float:
    """The sidecar's ``separate.zoom_letters`` (0 when absent): 1 undoes a zoom whose parts are the
    pictures of one lettered panel, by guided's letter guard read on the whole figure (exactly
    one part, the top-left one, carries a panel letter; section 40)."""
    return _sidecar_number(meta, "zoom_letters", weights, lambda v: v in (0, 1), "0 or 1")


def zoom_for(weights: str | None) -> tuple[float, float, float, float, float]:
    """(:func:`zoom_ratio`, :func:`hint_share`, :func:`part_cap`, :func:`hint_conf`,
    :func:`zoom_letter_guard`) of the sidecar of ``weights`` (the shipped ones when None)."""
    from glomssl.mining.yolo import weights_meta

    meta = weights_meta(weights)
    return (
        zoom_ratio(meta, weights),
        hint_share(meta, weights),
        part_cap(meta, weights),
        hint_conf(meta, weights),
        zoom_letter_guard(meta, weights),
    )


def rect_for(weights: str | None) -> bool:
    """:func:`letterbox_rect` of the sidecar of ``weights`` (the shipped ones when None)."""
    from glomssl.mining.yolo import weights_meta

    return letterbox_rect(weights_meta(weights), weights)


@dataclasses.dataclass
class SeparateConfig:
    """Options of ``glomssl separate``."""

    input: str = ""  # FOLDER of figures or a MANIFEST (jsonl)
    out: str = "panels_out"
    method: str = "auto"
    weights: str | None = None  # None: the weights shipped with glomssl
    conf: float | None = opt(None, gt=0, lt=1)  # None: tuned for the weights (tuned_settings)
    iou: float | None = opt(None, gt=0, le=1)  # NMS overlap; None: tuned (tuned_iou)
    imgsz: int = opt(0, ge=0, le=4096)  # 0: the size the weights were trained at
    min_side: int = opt(24, ge=1)  # panels narrower or lower than this (px) are dropped
    seams: bool = False  # classic cuts also at 1-px gutters and seams of touching photos
    batch: int = opt(8, ge=1)
    preview: int = opt(0, ge=0)  # draw the boxes of this many figures into DIR/previews
    device: str = "cpu"
    quiet: bool = False

    def validate(self) -> None:
        resolve_method(self.method)
        if not self.input or not Path(self.input).exists():
            raise GlomsslError(f"--input {self.input!r} does not exist; pass a folder or manifest")
        if self.conf is not None and not 0.0 < self.conf < 1.0:
            raise GlomsslError(f"--conf must be between 0 and 1, got {self.conf}")
        if self.iou is not None and not 0.0 < self.iou <= 1.0:
            raise GlomsslError(f"--iou must be in (0, 1], got {self.iou}")
        if self.imgsz and not (64 <= self.imgsz <= 4096 and self.imgsz % 32 == 0):
            raise GlomsslError(
                f"--imgsz must be a multiple of 32 from 64 to 4096, got {self.imgsz}"
            )
        if self.min_side < 1 or self.batch < 1 or self.preview < 0:
            raise GlomsslError("--min-side and --batch must be >= 1 and --preview >= 0")
        from glomssl.mining.yolo import ultralytics_device

        ultralytics_device(self.device)


class Separator:
    """Find panel boxes in figures with one method; ``split(images)`` -> scored boxes per figure."""

    def __init__(
        self,
        method: str = "auto",
        weights: str | None = None,
        conf: float | None = None,
        iou: float | None = None,
        imgsz: int = 0,
        min_side: int = 24,
        device: str = "cpu",
        hybrid: dict[str, float] | None = None,
        classic: ClassicParams = DEFAULT_CLASSIC,
        windows: float | None = None,
        zoom: float | None = None,
        zoom_hint: float | None = None,
        zoom_cap: float | None = None,
        zoom_conf: float | None = None,
        zoom_letters: float | None = None,
    ) -> None:
        self.method = resolve_method(method)
        tuned_conf, tuned = tuned_settings(self.method, weights)
        self.conf = conf if conf is not None else tuned_conf
        self.iou = iou if iou is not None else tuned_iou(self.method, weights)
        self.min_side = min_side
        self.hybrid = dataclasses.replace(tuned, **(hybrid or {}), conf=self.conf)
        self.classic = classic  # the whitespace/seam splitter's settings (also the hybrid's leaves)
        self.detector: Any = None
        self.imgsz = imgsz or 512
        self.rect = False  # square padding of a batch (see letterbox_rect)
        self.windows = 0.0  # long strips shown whole (see strip_ratio)
        self.stretch = 0.0  # figures shown to the detector as they are (see ink_stretch)
        self.zoom = 0.0  # long panels kept as guided returns them (see zoom_ratio)
        self.zoom_hint = 0.0  # with zoom: every long panel is looked at again (see hint_share)
        self.zoom_cap = 0.0  # ... and may be cut into any number of parts (see part_cap)
        self.zoom_conf = 0.0  # ... hinted by any detector box guided keeps (see hint_conf)
        self.zoom_letters = 0.0  # ... even into one lettered panel's pictures (zoom_letter_guard)
        if self.method in ("yolo", "hybrid", "guided"):
            from glomssl.mining.yolo import load_detector, ultralytics_device, weights_meta

            self.device = ultralytics_device(device)
            self.detector = load_detector(weights)
            meta = weights_meta(weights)
            self.imgsz = imgsz or int(meta.get("imgsz", 512))
            self.rect = letterbox_rect(meta, weights)
            self.windows = strip_ratio(meta, weights) if windows is None else windows
            self.stretch = ink_stretch(meta, weights)
            # the zoom settings are checked for every method, and used by guided only
            zoom = zoom_ratio(meta, weights) if zoom is None else zoom
            hint = hint_share(meta, weights) if zoom_hint is None else zoom_hint
            cap = part_cap(meta, weights) if zoom_cap is None else zoom_cap
            hconf = hint_conf(meta, weights) if zoom_conf is None else zoom_conf
            guard = zoom_letter_guard(meta, weights) if zoom_letters is None else zoom_letters
            self.zoom = zoom if self.method == "guided" else 0.0
            self.zoom_letters = guard if self.zoom else 0.0
            self.zoom_hint = hint if self.zoom else 0.0
            self.zoom_cap = cap if self.zoom_hint else 0.0
            self.zoom_conf = hconf if self.zoom_hint else 0.0

    def detect(self, arrs: Sequence[np.ndarray]) -> list[list[Scored]]:
        """Raw detector boxes (figure pixels) and confidences for (H, W, 3) RGB arrays; a long
        strip is seen in windows when the weights ask for it (``separate.windows``)."""
        wins = [strip_windows(a.shape, self.windows) for a in arrs]
        crops = [a[y0:y1, x0:x1] for a, ws in zip(arrs, wins) for x0, y0, x1, y1 in ws]
        found = iter(self._predict(crops))
        out = []
        for a, ws in zip(arrs, wins):
            per = [next(found) for _ in ws]
            out.append(per[0] if len(ws) == 1 else merge_windows(per, ws, a.shape, self.iou))
        return out  # type: ignore[return-value]

    def _predict(self, arrs: Sequence[np.ndarray]) -> list[list[Scored]]:
        """The detector on each (H, W, 3) RGB array, boxes in that array's pixels."""
        bgr = [stretch_ink(a, self.stretch)[:, :, ::-1] for a in arrs]  # ultralytics: BGR
        args = {"imgsz": self.imgsz, "conf": self.conf, "iou": self.iou, "device": self.device}
        from glomssl.mining.yolo import torch_settings_kept

        with torch_settings_kept():  # ultralytics would set torch's threads for the whole process
            if self.rect:  # one figure at a time, padded only to its own rectangle
                results = [
                    self.detector.predict(a, rect=True, verbose=False, **args)[0] for a in bgr
                ]
            else:  # one batch, each figure padded to a square
                results = self.detector.predict(bgr, verbose=False, **args)
        raw = []
        for res in results:
            xyxy = res.boxes.xyxy.cpu().numpy()  # (N, 4)
            scores = res.boxes.conf.cpu().numpy()  # (N,)
            raw.append([(tuple(b.tolist()), float(s)) for b, s in zip(xyxy, scores)])
        return raw

    def split(self, images: Sequence[Image.Image]) -> list[list[Scored]]:
        """Panels of each figure (reading order); never empty: falls back to the whole figure.

        With ``zoom`` (guided only), a returned panel at least ``zoom`` times as long as it is
        high (or high as wide) is separated again on its own, so the detector sees it at its
        full input size (in windows when it is a long strip): a row of touching pictures under
        column headers is one long region for the whitespace cuts and one box for the detector
        at the figure's scale. Two or more panels found there replace it. ``zoom_hint``,
        ``zoom_conf`` and ``zoom_cap`` narrow which panels are looked at again and how finely
        they may be cut (:meth:`_most_parts`); ``zoom_letters`` keeps one lettered panel's
        pictures together (:meth:`_one_lettered`). Diary, sections 36-40.

        Images decoded from a JPEG file (their own ``format``, or the one
        :func:`glomssl.data.images.load_rgb` keeps) are cut with guided's ``ringing`` setting
        (section 74); pass images opened that way, not converted copies, to get it."""
        arrs = [np.asarray(im.convert("RGB")) for im in images]  # (H, W, 3) each
        jpegs = [is_jpeg(im) for im in images]
        found, dets = self._split(arrs, jpegs)
        if not self.zoom:
            return found
        return [self._zoom_in(*args) for args in zip(arrs, found, dets, jpegs)]

    def _most_parts(self, box: Box, dets: Sequence[Scored]) -> float:
        """How many parts zooming into the long panel ``box`` may cut it into (fewer than 2: it
        is not looked at again). Without ``zoom_hint``: any number. With it, the figure-scale
        detector boxes ``dets`` that hint at smaller panels inside ``box`` count (each at least
        ``zoom_hint`` inside it, not it: IoU < 0.5, and at least ``zoom_conf`` confident); none:
        0; else, with ``zoom_cap``, that count plus ``zoom_cap`` (the hinted panels and the
        rest), without it any number."""
        if not self.zoom_hint:
            return math.inf
        hints = 0
        for det, conf in dets:
            own = area(det)
            if conf < self.zoom_conf or own <= 0 or iou(det, box) >= 0.5:
                continue
            if inter(det, box) >= self.zoom_hint * own:
                hints += 1
        if not hints:
            return 0
        return hints + self.zoom_cap if self.zoom_cap else math.inf

    def _zoom_in(
        self, arr: np.ndarray, panels: list[Scored], dets: list[Scored], jpeg: bool = False
    ) -> list[Scored]:
        out: list[Scored] = []
        regions: list[Box] | None = None  # the figure's classic regions, for the letter guard
        for box, score in panels:
            w, h = box[2] - box[0], box[3] - box[1]
            long = min(w, h) >= self.min_side and max(w, h) >= self.zoom * min(w, h)
            most = self._most_parts(box, dets) if long else 0
            if most >= 2:
                crop = np.ascontiguousarray(arr[box[1] : box[3], box[0] : box[2]])
                inner = self._split([crop], [jpeg])[0][0]
                parts = [((x0 + box[0], y0 + box[1], x1 + box[0], y1 + box[1]), s)
                         for (x0, y0, x1, y1), s in inner]  # fmt: skip
                if 2 <= len(parts) <= most:
                    if self.zoom_letters and regions is None:
                        bg = background_colour(arr, self.classic)
                        ink = self._ink(arr, bg)
                        gutters = self._gutters(arr, bg, ink, None, jpeg)
                        regions = leaves(arr, ink, self.min_side, self.classic, 0.06, gutters)
                    if not (regions and self._one_lettered(box, parts, regions, arr.shape)):
                        out += parts
                        continue
            out.append((box, score))
        return sorted(out, key=lambda s: (s[0][1] // 16, s[0][0]))  # reading order, as clean_boxes

    def _one_lettered(
        self, box: Box, parts: list[Scored], regions: list[Box], shape: tuple[int, ...]
    ) -> bool:
        """Guided's letter guard on a zoom's ``parts``, with the letters of the whole figure (a
        panel's letter usually sits outside the panel box the zoom looked into)."""
        limit = size_limit(shape, self.min_side)
        boxes = [b for b, _ in parts]
        return one_lettered_panel(box, boxes, [], regions, shape, limit, self.hybrid)

    def _floor(self) -> int:
        """The smallest side (px) guided cuts regions down to: ``--min-side``, or guided's ``tiny``
        when that is smaller (section 49; boxes under ``--min-side`` must then look like pictures)."""
        if self.method == "guided" and self.hybrid.tiny:
            return min(self.min_side, max(1, round(self.hybrid.tiny)))
        return self.min_side

    def _regions(
        self, arr: np.ndarray, ink: np.ndarray, gutters: Gutters | None
    ) -> Callable[[], list[Box]]:
        """The figure's whitespace regions down to guided's floor, as guided cuts them: made on the
        first call, then kept for the next."""
        share = self.hybrid.tiny_share if self.hybrid.tiny else 0.06
        made: list[list[Box]] = []

        def regions() -> list[Box]:
            if not made:
                made.append(leaves(arr, ink, self._floor(), self.classic, share, gutters))
            return made[0]

        return regions

    def _ink(self, arr: np.ndarray, bg: np.ndarray) -> np.ndarray:
        """The ink mask the cuts read: with guided's ``shaded``, shaded plot panels filled in
        (section 89)."""
        ink = ink_mask(arr, params=self.classic, bg=bg)
        if self.method == "guided" and self.hybrid.shaded:
            ink = fill_shaded(arr, ink, bg)
        return ink

    def _gutters(
        self, arr: np.ndarray, bg: np.ndarray, ink: np.ndarray, pale: np.ndarray | None, jpeg: bool
    ) -> Gutters | None:
        """How guided's cuts read blank lines in a JPEG figure (``ringing``, section 74), else
        None. ``pale``: the ink mask with pale pixels counted at ``hp.pale``, when made."""
        hp = self.hybrid
        if not (jpeg and self.method == "guided" and hp.ringing):
            return None
        if pale is None or hp.pale != RINGING_PALE:
            pale = ink | off_background(arr, bg, RINGING_PALE)
        return Gutters(strong=ink_mask(arr, round(hp.ringing), self.classic, bg), pale=pale)

    def _split(
        self, arrs: list[np.ndarray], jpegs: Sequence[bool] | None = None
    ) -> tuple[list[list[Scored]], list[list[Scored]]]:
        """(panels, raw detector boxes) of each figure; no detector boxes for ``classic``.
        ``jpegs``: which figures were stored as JPEG (guided's ``ringing``)."""
        bgs = [background_colour(a, self.classic) for a in arrs]  # (C,) each
        inks = [self._ink(a, bg) for a, bg in zip(arrs, bgs)]
        dets: list[list[Scored]] = [[] for _ in arrs]
        hp, guided = self.hybrid, self.method == "guided"
        pales = [  # ink with pale pixels counted: made once, for guided's cuts and its filters
            ink | off_background(a, bg, hp.pale) if guided and hp.pale else ink
            for a, bg, ink in zip(arrs, bgs, inks)
        ]
        gutters = [
            self._gutters(a, bg, ink, pale if hp.pale else None, jpeg)
            for a, bg, ink, pale, jpeg in zip(arrs, bgs, inks, pales, jpegs or [False] * len(arrs))
        ]
        # guided's whitespace regions, made once a figure for its cuts, `rescue` and `plot_labels`
        regions = [self._regions(a, ink, gut) for a, ink, gut in zip(arrs, inks, gutters)]
        if self.method == "classic":
            raw = [
                classic_boxes(Image.fromarray(a), self.min_side, params=self.classic, ink=ink)
                for a, ink in zip(arrs, inks)
            ]
        elif self.method == "yolo":
            raw = dets = self.detect(arrs)
        elif guided:
            dets = self.detect(arrs)
            raw = [
                guided_boxes(a, ink, found, self._floor(), hp, self.classic, pale, gut, regs(), bg)
                for a, ink, found, pale, gut, regs, bg in zip(
                    arrs, inks, dets, pales, gutters, regions, bgs
                )
            ]
        else:
            dets = self.detect(arrs)
            raw = [
                hybrid_boxes(a, ink, found, self._floor(), hp, self.classic)
                for a, ink, found in zip(arrs, inks, dets)
            ]
        out = []
        for a, bg, ink, pale_ink, boxes, found, regs in zip(
            arrs, bgs, inks, pales, raw, dets, regions
        ):
            kept = clean_boxes(ink, boxes, self._floor())
            first = kept  # as cut, before any growth: pale_join measures its gaps on these
            if self._floor() < self.min_side:  # guided's tiny panels: pictures only
                test_ink = ink
                if guided and hp.tiny_pale and hp.pale:
                    # pale edges first, and pale pixels count for the test (sections 58, 60)
                    kept = grow_pale(a, ink, kept, hp.pale, hp.pale_share, self.classic, bg)
                    test_ink = pale_ink
                limit = size_limit(a.shape, self.min_side, hp.tiny_share)
                free = _free_regions(regs, kept)
                if guided and hp.lane_join:  # a lane with its loose y title (section 88)
                    kept, first = _join_titles(a, ink, kept, first, free, limit, self.min_side, hp)
                keep = [
                    min(b[2] - b[0], b[3] - b[1]) >= self.min_side
                    or (not flat_line(b, hp) and tiny_picture(a, test_ink, b, hp))
                    or (
                        guided
                        and narrow_plot(a, ink, b, limit, hp)  # sections 71-72
                        and not (hp.lane_title and lane_piece(a, ink, b, free(), hp))  # 83
                    )
                    for b, _ in kept
                ]
                kept, first = _chosen(kept, keep), _chosen(first, keep)
            if guided and hp.text:  # a chart's tick labels are not panels (section 61)
                keep = [not text_line(ink, pale_ink, b, hp) for b, _ in kept]
                kept, first = _chosen(kept, keep), _chosen(first, keep)
            if guided and hp.rescue:  # a small chart cut into pieces all dropped (section 78)
                back = rescue_lost(a, ink, kept, found, regs, self.min_side, hp)
                kept, first = kept + back, first + back
            if len(kept) <= 1:  # not compound (or one panel found): the whole figure, trimmed
                whole, _ = whole_figure(ink)
                kept = first = [(whole, kept[0][1] if kept else 1.0)]
            if guided and hp.pale:  # pale picture edges (section 57)
                kept = grow_pale(a, ink, kept, hp.pale, hp.pale_share, self.classic, bg)
                if hp.pale_join:  # pieces of one picture parted by bare glass (section 63)
                    confident = [b for b, s in found if s >= hp.conf]
                    kept = join_pale(first, kept, pale_ink, confident, hp)
            if guided and hp.plot_labels:  # a chart plot's labels cut off by whitespace (73)
                limit = size_limit(a.shape, self.min_side, hp.tiny_share)
                kept = join_plot_labels(a, ink, kept, regs, hp, limit)
            out.append(kept)
        return out, dets


def _join_titles(
    arr: np.ndarray,
    ink: np.ndarray,
    kept: list[Scored],
    first: list[Scored],
    free: Callable[[], list[Box]],
    limit: int,
    min_side: int,
    hp: HybridParams,
) -> tuple[list[Scored], list[Scored]]:
    """``kept`` and ``first`` with each box under ``min_side`` that is no narrow plot alone
    replaced by its union with the loose y title beside it, where the two pass together
    (:func:`titled_lane`, ``lane_join``)."""
    kept, first = list(kept), list(first)
    for i, (b, score) in enumerate(kept):
        if min(b[2] - b[0], b[3] - b[1]) >= min_side or narrow_plot(arr, ink, b, limit, hp):
            continue
        joined = titled_lane(b, free(), lambda u: narrow_plot(arr, ink, u, limit, hp), hp)
        if joined is not None:
            kept[i], first[i] = (joined, score), (joined, first[i][1])
    return kept, first


def _free_regions(
    regions: Callable[[], Sequence[Box]], kept: Sequence[Scored]
) -> Callable[[], list[Box]]:
    """The whitespace regions that no box of ``kept`` touches, made on first use."""
    made: list[list[Box]] = []

    def free() -> list[Box]:
        if not made:
            made.append([r for r in regions() if not any(inter(r, k) > 0 for k, _ in kept)])
        return made[0]

    return free


def _chosen(items: list[Scored], keep: list[bool]) -> list[Scored]:
    return [item for item, k in zip(items, keep) if k]


# ----------------------------------------------------------------------------- the run


def _open_state(path: Path, fingerprint: str) -> sqlite3.Connection:
    try:
        db = sqlite3.connect(path)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        db.execute(
            "CREATE TABLE IF NOT EXISTS parents (key TEXT PRIMARY KEY, status TEXT NOT NULL,"
            " rows TEXT, error TEXT)"
        )
        old = db.execute("SELECT value FROM meta WHERE key='config'").fetchone()
    except sqlite3.DatabaseError as exc:
        raise GlomsslError(
            f"{path} is not a glomssl separate state database ({exc}); use a new --out folder "
            "or delete that file to start over"
        ) from exc
    if old is None:
        with db:
            db.execute("INSERT INTO meta VALUES ('config', ?)", (fingerprint,))
    elif old[0] != fingerprint:
        db.close()
        raise GlomsslError(
            f"{path.parent} holds panels made with other settings "
            f"({_settings_change(old[0], fingerprint)}); use a new --out folder or delete that one"
        )
    return db


def _settings_change(old: str, new: str) -> str:
    """The settings that differ between two run fingerprints, as ``key was -> now`` (``unset``
    where one lacks the key), or the old text whole when either is not a JSON object."""
    try:
        was, now = json.loads(old), json.loads(new)
    except ValueError:
        return old
    if not (isinstance(was, dict) and isinstance(now, dict)):
        return old

    def shown(d: dict[str, Any], k: str) -> str:
        return json.dumps(d[k]) if k in d else "unset"

    keys = sorted(k for k in set(was) | set(now) if shown(was, k) != shown(now, k))
    return "; ".join(f"{k} {shown(was, k)} -> {shown(now, k)}" for k in keys) or old


def _preview(img: Image.Image, panels: Sequence[Scored], target: Path) -> None:
    canvas = img.copy()
    dr = ImageDraw.Draw(canvas)
    for k, (b, s) in enumerate(panels):
        dr.rectangle([b[0], b[1], b[2] - 1, b[3] - 1], outline=(255, 0, 0), width=2)
        dr.text((b[0] + 3, b[1] + 2), f"{k} {s:.2f}", fill=(255, 0, 0))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    atomic_write_bytes(target, buf.getvalue(), fsync=False)


def _names(file: Path, key: str) -> tuple[str, str]:
    """(stem, tag) naming a figure's crops and preview: file stem + a hash of its key."""
    return Path(file).stem[:60], hashlib.sha1(key.encode("utf-8")).hexdigest()[:8]


# guided settings that act only together with others (key, then the keys it needs): each is
# recorded in a run's fingerprint only when it and those are all set
ONLY_WITH: tuple[tuple[str, ...], ...] = (
    ("plot_small", "strokes"),
    ("plot_lane", "strokes"),
    ("lane_axis", "plot_lane", "strokes"),
    ("lane_title", "lane_axis", "plot_lane", "strokes"),
    ("lane_x", "lane_axis", "plot_lane", "strokes"),
    ("lane_join", "plot_lane", "strokes"),
    ("lane_label", "lane_title", "lane_axis", "plot_lane", "strokes"),
    ("plot_labels", "strokes"),
    ("tiny_pale", "tiny", "pale"),
    ("hairline_pale", "hairline"),
    ("hairline_plots", "hairline", "strokes"),
    ("valley", "hairline"),
    ("text_run", "text"),
    ("pale_join", "pale"),
    ("tiny_flat", "tiny"),
    ("ringing",),
    ("ridge", "ringing", "hairline"),
    ("ridge_reach", "ridge", "ringing", "hairline"),
    ("rescue",),
    ("shaded",),
)


def run_fingerprint(cfg: SeparateConfig, method: str | None = None) -> str:
    """The settings that decide a run's panels, as the JSON text its state database keeps: a folder
    is resumed only with the same text. Settings added to the sidecar over time enter it only when
    set, so folders cut before them still resume."""
    method = method or resolve_method(cfg.method)
    settings: dict[str, Any] = {"method": method, "min_side": cfg.min_side}
    if method != "yolo":  # the gutter analysis changed in versions 2 (background) and 3 (strips):
        settings["classic"] = 3  # never resume an older version's panels with it
        if cfg.seams:
            settings["seams"] = True
    if method != "classic":
        tuned_conf, tuned = tuned_settings(method, cfg.weights)
        conf = cfg.conf if cfg.conf is not None else tuned_conf
        iou = cfg.iou if cfg.iou is not None else tuned_iou(method, cfg.weights)
        settings.update(weights=cfg.weights, conf=conf, imgsz=cfg.imgsz, iou=iou)
        if rect_for(cfg.weights):  # only when set: runs from before the setting still resume
            settings["rect"] = True
        windows = windows_for(cfg.weights)
        if windows:  # likewise
            settings["windows"] = windows
        stretch = stretch_for(cfg.weights)
        if stretch:  # likewise
            settings["stretch"] = stretch
        if method == "guided":  # its own settings travel with the weights' sidecar
            own = {k: v for k, v in vars(tuned).items() if k != "conf"}
            if not tuned.fragments:  # off: not recorded, so runs from before the setting resume
                del own["fragments"], own["fragment_ink"]
            if not tuned.tiny:  # likewise
                del own["tiny"], own["tiny_share"]
                if not tuned.pictures:  # the picture test's thresholds serve both settings
                    del own["tiny_ink"], own["tiny_std"], own["tiny_long"]
            if not tuned.pictures:  # likewise
                del own["pictures"]
            if not tuned.dominant:  # likewise
                del own["dominant"]
            if not tuned.label_member:  # likewise
                del own["label_member"]
            if not tuned.strokes:  # likewise
                del own["strokes"]
            if not tuned.pale:  # likewise
                del own["pale"], own["pale_share"]
            if not tuned.hairline:  # likewise
                del own["hairline"], own["hairline_rest"]
            if not tuned.text:  # likewise
                del own["text"], own["text_ink"], own["text_stroke"]
            if not (tuned.tiny_upright and tuned.tiny and tuned.merge):  # likewise
                del own["tiny_upright"], own["tiny_fill"]
            for key, *needs in ONLY_WITH:  # likewise, and only with the settings they need
                if not (getattr(tuned, key) and all(getattr(tuned, n) for n in needs)):
                    del own[key]
            settings.update(own)
            zoom, hint, cap, hconf, letters = zoom_for(cfg.weights)
            if zoom:  # only when set, as above
                settings["zoom"] = zoom
                if hint:
                    settings["zoom_hint"] = hint
                    if cap:
                        settings["zoom_cap"] = cap
                    if hconf:
                        settings["zoom_conf"] = hconf
                if letters:
                    settings["zoom_letters"] = letters
    return json.dumps(settings, sort_keys=True)


def cut_with_other_settings(cfg: SeparateConfig) -> str | None:
    """The settings ``cfg.out`` was cut with, when they differ from ``cfg``'s (a changed option, or a
    default this version changed); None for a new, matching or unreadable folder (the run itself
    reports an unreadable one)."""
    path = Path(cfg.out) / "separate.sqlite"
    if not path.is_file():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            has_meta = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'"
            ).fetchone()
            old = (
                db.execute("SELECT value FROM meta WHERE key='config'").fetchone()
                if has_meta
                else None
            )
    except sqlite3.DatabaseError:
        return None
    if old is None or old[0] == run_fingerprint(cfg):
        return None
    return str(old[0])


def run_separate(cfg: SeparateConfig) -> dict[str, Any]:
    """Separate every figure of ``cfg.input`` into panel crops under ``cfg.out``; resumable.

    Everything that can be checked is checked before the output folder or its state exist (options,
    input, detector weights). Returns a summary: figures, done now, skipped (done before), failed,
    panels, paths written, the method that ran.
    """
    cfg.validate()
    refuse_out_is_input(cfg.out, [cfg.input], "separate")  # a rerun would cut its own panels
    check_not_overwriting(cfg.input, cfg.out)  # OUT/manifest.jsonl must not replace the input's
    method = resolve_method(cfg.method)
    if method != "classic" or cfg.weights is not None:  # a bad --weights is refused, whatever runs
        from glomssl.mining.yolo import check_weights

        check_weights(cfg.weights)
        if method != "classic":
            tuned_settings(method, cfg.weights)  # a bad value in the weights' sidecar: refused now
            tuned_iou(method, cfg.weights)
            rect_for(cfg.weights)
            windows_for(cfg.weights)
            stretch_for(cfg.weights)
            zoom_for(cfg.weights)
    items = load_image_list(cfg.input, exclude=[cfg.out], command="separate")  # not its own panels
    out = ensure_writable_dir(cfg.out)
    with folder_lock(out, "separate"):
        return _run(cfg, method, items, out)


def _run(
    cfg: SeparateConfig, method: str, items: list[tuple[Path, Row]], out: Path
) -> dict[str, Any]:
    from glomssl.data.images import load_rgb

    db = _open_state(out / "separate.sqlite", run_fingerprint(cfg, method))
    try:
        keyed: dict[str, tuple[Path, Row]] = {}
        for file, row in items:  # the same file listed twice is separated once
            keyed.setdefault(os.fspath(Path(file).resolve()), (file, row))
        done = {k for (k,) in db.execute("SELECT key FROM parents")}
        todo = [(k, f, r) for k, (f, r) in keyed.items() if k not in done]
        sep = (  # nothing to do: do not load the detector at all
            Separator(
                method,
                cfg.weights,
                cfg.conf,
                cfg.iou,
                cfg.imgsz,
                cfg.min_side,
                cfg.device,
                classic=ClassicParams.touching() if cfg.seams else DEFAULT_CLASSIC,
            )
            if todo
            else None
        )
        from tqdm import tqdm

        bar = tqdm(
            total=len(todo), disable=True if cfg.quiet else None, unit="fig", desc="separate"
        )
        previews = out / "previews"
        n_prev = len(list(previews.glob("*.png"))) if cfg.preview else 0
        for start in range(0, len(todo), cfg.batch):
            chunk, imgs = [], []
            for key, file, row in todo[start : start + cfg.batch]:
                try:
                    imgs.append(load_rgb(file))
                    chunk.append((key, file, row))
                except GlomsslError as exc:
                    with db:
                        db.execute(
                            "INSERT OR REPLACE INTO parents VALUES (?, 'failed', NULL, ?)",
                            (key, str(exc)),
                        )
                    bar.update(1)
            split = sep.split(imgs) if imgs and sep is not None else []
            for (key, file, row), img, panels in zip(chunk, imgs, split):
                stem, tag = _names(file, key)
                prov = {k: v for k, v in row.items() if k not in _OWN_FIELDS}
                rows = []
                for k, (b, score) in enumerate(panels):
                    buf = io.BytesIO()
                    img.crop(b).save(buf, format="PNG")
                    data = buf.getvalue()
                    rel = f"panels/{stem}-{tag}-p{k:02d}.png"
                    atomic_write_bytes(out / rel, data, fsync=False)
                    rows.append(
                        {
                            "path": rel,
                            "sha256": sha256_bytes(data),
                            "width": b[2] - b[0],
                            "height": b[3] - b[1],
                            "parent": relpath(file, out),
                            "bbox": list(b),
                            "score": round(score, 4),
                            "method": method,
                            **prov,
                        }
                    )
                target = previews / f"{stem}-{tag}.png"
                if n_prev < cfg.preview and not target.exists():  # labels: the manifest's scores
                    _preview(img, [(tuple(r["bbox"]), float(r["score"])) for r in rows], target)
                    n_prev += 1
                with db:
                    db.execute(
                        "INSERT OR REPLACE INTO parents VALUES (?, 'done', ?, NULL)",
                        (key, json.dumps(rows)),
                    )
                bar.update(1)
        bar.close()
        status = {
            k: (s, r, e)
            for k, s, r, e in db.execute("SELECT key, status, rows, error FROM parents")
        }
    finally:
        db.close()
    panel_rows: list[Row] = []
    failures = []
    for key, (file, _row) in keyed.items():
        s, r, e = status.get(key, ("missing", None, None))
        if s == "done":
            rows = json.loads(r)
            panel_rows.extend(rows)
            n_prev = _catch_up_preview(cfg, out, key, file, rows, n_prev)
        elif s == "failed":
            failures.append({"parent": relpath(file, out), "error": e})
    write_manifest(out / "manifest.jsonl", panel_rows)
    write_jsonl(out / "failures.jsonl", failures)
    return {
        "figures": len(keyed),
        "duplicates": len(items) - len(keyed),
        "processed": len(todo),
        "skipped": len(keyed) - len(todo),
        "failed": len(failures),
        "panels": len(panel_rows),
        "manifest": str(out / "manifest.jsonl"),
        "failures": str(out / "failures.jsonl"),
        "method": method,
    }


def _catch_up_preview(
    cfg: SeparateConfig, out: Path, key: str, file: Path, rows: list[Row], n_prev: int
) -> int:
    """Draw the preview of a figure separated by an earlier run, while fewer than --preview exist."""
    if n_prev >= cfg.preview:
        return n_prev
    from glomssl.data.images import load_rgb

    stem, tag = _names(file, key)
    target = out / "previews" / f"{stem}-{tag}.png"
    if target.exists():
        return n_prev
    try:
        img = load_rgb(file)
    except GlomsslError:  # gone or changed since: no preview, the panels stay
        return n_prev
    _preview(img, [(tuple(r["bbox"]), float(r["score"])) for r in rows], target)
    return n_prev + 1
