"""The learned curation scorer of ``glomssl curate train``: hand-made features + a small classifier.

Glo-In-One kept mined panels that a curator scored >= 0.7. glomssl's curator is deliberately small so
it trains in seconds on a CPU from two folders (positives, e.g. glomerulus crops; negatives, e.g. other
tissue, charts, other modalities) and needs no pretrained network:

* features (``FEATURE_NAMES``, computed on a 128 x 128 resize): the curate statistics
  (:func:`glomssl.mining.curate.image_stats`), HSV histograms (hue weighted by saturation, saturation,
  value), a uniform local-binary-pattern texture histogram (Ojala et al., TPAMI 2002) at two scales,
  and a gradient-magnitude histogram;
* classifier: standardisation + logistic regression (default) or a one-hidden-layer MLP, fitted with
  scikit-learn and evaluated on a stratified held-out split.

The saved model is plain JSON (``format: glomssl-curate-scorer``): feature names, standardisation,
weights and held-out metrics. Nothing is unpickled; :func:`load_scorer` refuses any other file with
a one-line GlomsslError. Scoring uses numpy only.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np

from glomssl.config import opt
from glomssl.errors import GlomsslError
from glomssl.mining.curate import image_stats, load_rgb

FORMAT = "glomssl-curate-scorer"
VERSION = 1
SIDE = 128
_STAT_KEYS = (
    "lum_mean lum_std lum_median white dark ink colour fg_chroma top1 ink_top8 ink_flat ink_grey "
    "h_run v_run r_mean g_mean b_mean channels"
).split()
_BINS = {"hue": 12, "sat": 8, "val": 8, "lbp1": 10, "lbp2": 10, "grad": 8}
FEATURE_NAMES: tuple[str, ...] = tuple(
    [f"stat_{k}" for k in _STAT_KEYS] + [f"{k}_{i}" for k, n in _BINS.items() for i in range(n)]
)


def _lbp_uniform(grey: np.ndarray, radius: int) -> np.ndarray:
    """Histogram (10 bins) of rotation-invariant uniform LBP codes with 8 neighbours.

    grey: (H, W) float. Code = number of neighbours >= centre when the circular bit pattern has at most
    two 0/1 transitions (0..8), else 9 ("non-uniform").
    """
    h, w = grey.shape
    r = radius
    if h <= 2 * r or w <= 2 * r:
        return np.zeros(10)
    c = grey[r : h - r, r : w - r]  # (H-2r, W-2r)
    offs = [(-r, -r), (-r, 0), (-r, r), (0, r), (r, r), (r, 0), (r, -r), (0, -r)]  # circular order
    bits = np.stack([grey[r + dy : h - r + dy, r + dx : w - r + dx] >= c for dy, dx in offs])
    ones = bits.sum(axis=0)  # (H-2r, W-2r)
    transitions = (bits != np.roll(bits, 1, axis=0)).sum(axis=0)
    code = np.where(transitions <= 2, ones, 9)
    hist = np.bincount(code.ravel(), minlength=10).astype(np.float64)
    return hist / max(hist.sum(), 1.0)


def image_features(img: Any) -> np.ndarray:
    """Feature vector (len(FEATURE_NAMES),) float64 of a PIL RGB image."""
    from PIL import Image

    small = img.convert("RGB").resize((SIDE, SIDE), Image.Resampling.BOX)
    rgb = np.asarray(small)  # (128, 128, 3) uint8
    stats = image_stats(rgb)
    feats: list[float] = [
        stats[k] / (255.0 if k in ("lum_std", "fg_chroma") else 1.0) for k in _STAT_KEYS
    ]
    hsv = np.asarray(small.convert("HSV")).astype(np.float64) / 255.0  # (128, 128, 3)
    hue, sat, val = hsv[..., 0].ravel(), hsv[..., 1].ravel(), hsv[..., 2].ravel()
    hh = np.histogram(hue, bins=_BINS["hue"], range=(0, 1), weights=sat)[0]
    feats += list(hh / max(sat.sum(), 1e-9))
    feats += list(np.histogram(sat, bins=_BINS["sat"], range=(0, 1))[0] / sat.size)
    feats += list(np.histogram(val, bins=_BINS["val"], range=(0, 1))[0] / val.size)
    grey = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])  # (128, 128)
    feats += list(_lbp_uniform(grey, 1))
    feats += list(_lbp_uniform(grey, 3))
    gy, gx = np.gradient(grey)
    mag = np.hypot(gx, gy).ravel()
    edges = np.array([0, 2, 4, 8, 16, 32, 64, 128, np.inf])
    feats += list(np.histogram(mag, bins=edges)[0] / mag.size)
    out = np.asarray(feats, dtype=np.float64)
    assert out.shape == (len(FEATURE_NAMES),)
    return out


@dataclasses.dataclass
class Scorer:
    """A loaded scorer: standardise features, then a logistic regression or a one-hidden-layer MLP."""

    mean: np.ndarray  # (F,)
    scale: np.ndarray  # (F,)
    layers: list[tuple[np.ndarray, np.ndarray]]  # [(W (in, out), b (out,))], ReLU between layers
    meta: dict[str, Any]

    def score_features(self, x: np.ndarray) -> np.ndarray:
        """Probabilities of the positive class. x: (N, F) -> (N,)."""
        h = (np.atleast_2d(x) - self.mean) / self.scale
        for i, (w, b) in enumerate(self.layers):
            h = h @ w + b
            if i < len(self.layers) - 1:
                h = np.maximum(h, 0.0)
        z = np.clip(h[:, 0], -60.0, 60.0)
        return 1.0 / (1.0 + np.exp(-z))

    def score_image(self, img: Any) -> float:
        return float(self.score_features(image_features(img)[None, :])[0])


def _fail(path: Path, why: str) -> GlomsslError:
    return GlomsslError(
        f"{path} is not a glomssl curate scorer ({why}); pass a file written by `glomssl curate train`"
    )


def load_scorer(path: str | os.PathLike[str]) -> Scorer:
    """Load a scorer JSON written by :func:`save_scorer`; refuse anything else with one line."""
    p = Path(path)
    if not p.is_file():
        raise GlomsslError(f"scorer file {p} does not exist; check the --scorer path")
    try:
        with open(p, "rb") as fh:
            raw = fh.read(64 << 20)
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(p, "not JSON text") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise _fail(p, f'no "format": "{FORMAT}" field')
    if data.get("version") != VERSION:
        raise _fail(p, f"version {data.get('version')!r}, this glomssl reads version {VERSION}")
    if tuple(data.get("feature_names", ())) != FEATURE_NAMES:
        raise _fail(p, "its features differ from this glomssl's; retrain it with `curate train`")
    try:
        mean = np.asarray(data["mean"], dtype=np.float64)
        scale = np.asarray(data["scale"], dtype=np.float64)
        layers = [
            (
                np.asarray(layer["weight"], dtype=np.float64),
                np.asarray(layer["bias"], dtype=np.float64),
            )
            for layer in data["layers"]
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise _fail(p, f"missing or malformed field {exc}") from exc
    n = len(FEATURE_NAMES)
    dims = n
    ok = mean.shape == (n,) and scale.shape == (n,) and bool(layers) and bool(np.all(scale > 0))
    for w, b in layers:
        ok = ok and w.ndim == 2 and w.shape[0] == dims and b.shape == (w.shape[1],)
        dims = w.shape[1] if w.ndim == 2 else -1
    ok = ok and dims == 1
    arrays = [mean, scale] + [a for wb in layers for a in wb]
    if not ok or not all(np.all(np.isfinite(a)) for a in arrays):
        raise _fail(p, "array shapes or values are inconsistent")
    meta = {k: v for k, v in data.items() if k not in ("mean", "scale", "layers")}
    return Scorer(mean=mean, scale=scale, layers=layers, meta=meta)


def save_scorer(path: str | os.PathLike[str], scorer: Scorer) -> Path:
    """Write a scorer as JSON (atomically)."""
    from glomssl.fsutil import atomic_write_text

    data: dict[str, Any] = {"format": FORMAT, "version": VERSION}
    data.update({k: v for k, v in scorer.meta.items() if k not in ("format", "version")})
    data["feature_names"] = list(FEATURE_NAMES)
    data["mean"] = scorer.mean.tolist()
    data["scale"] = scorer.scale.tolist()
    data["layers"] = [{"weight": w.tolist(), "bias": b.tolist()} for w, b in scorer.layers]
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=False) + "\n")
    return Path(path)


@dataclasses.dataclass
class ScorerTrainConfig:
    """Options of ``glomssl curate train``."""

    positives: str = ""
    negatives: str = ""
    out: str = "scorer.json"
    model: Literal["logreg", "mlp"] = "logreg"
    val_fraction: float = 0.2
    c: float = 1.0
    hidden: int = 32
    seed: int = opt(0, ge=0)
    quiet: bool = False

    def validate(self) -> None:
        if not 0.0 <= self.val_fraction < 0.9:
            raise GlomsslError(f"--val-fraction {self.val_fraction} must lie in [0, 0.9)")
        if self.c <= 0:
            raise GlomsslError(f"--c {self.c} must be positive")
        if self.hidden < 1:
            raise GlomsslError(f"--hidden {self.hidden} must be at least 1")


def folder_features(
    folder: str | os.PathLike[str], quiet: bool = True
) -> tuple[np.ndarray, list[str]]:
    """Features of every readable image below ``folder``: ((N, F) array, skipped file names)."""
    from glomssl.manifest import list_images
    from glomssl.mining.curate import progress_iter

    root = Path(folder)
    if not root.is_dir():
        raise GlomsslError(f"{root} is not a folder of images; check the path")
    files = list_images(root)
    if not files:
        raise GlomsslError(f"folder {root} holds no images; point it at a folder of PNG/JPEG/TIFF")
    rows, skipped = [], []
    for f in progress_iter(files, quiet, f"features {root.name}"):
        try:
            rows.append(image_features(load_rgb(f)))
        except GlomsslError:
            skipped.append(str(f))
    return np.asarray(rows, dtype=np.float64).reshape(-1, len(FEATURE_NAMES)), skipped


def _metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    out = {"n": int(len(y)), "accuracy": float(((p >= 0.5) == (y == 1)).mean())}
    if len(set(y.tolist())) == 2:
        out["auc"] = float(roc_auc_score(y, p))
    return out


def train_scorer(
    x: np.ndarray, y: np.ndarray, cfg: ScorerTrainConfig
) -> tuple[Scorer, dict[str, Any]]:
    """Fit the scorer on (N, F) features and 0/1 labels; metrics on a stratified held-out split."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    counts = np.bincount(y.astype(np.int64), minlength=2)
    if counts.min() < 2:
        raise GlomsslError(
            f"need at least 2 readable positives and 2 negatives, got {counts[1]} and {counts[0]}"
        )
    idx = np.arange(len(y))
    n_val = math.ceil(cfg.val_fraction * len(y)) if cfg.val_fraction > 0 else 0
    if n_val >= 2 and len(y) - n_val >= 2 and counts.min() * cfg.val_fraction >= 1:
        tr, va = train_test_split(idx, test_size=n_val, stratify=y, random_state=cfg.seed)
    else:
        tr, va = idx, idx[:0]
    mean = x[tr].mean(axis=0)
    scale = x[tr].std(axis=0)
    scale = np.where(scale > 1e-9, scale, 1.0)
    z = (x - mean) / scale
    if cfg.model == "logreg":
        clf = LogisticRegression(C=cfg.c, max_iter=2000, class_weight="balanced")
        clf.fit(z[tr], y[tr])
        layers = [(clf.coef_.T.astype(np.float64), clf.intercept_.astype(np.float64))]
    else:
        clf = MLPClassifier(
            hidden_layer_sizes=(cfg.hidden,),
            alpha=1.0 / cfg.c * 1e-3,
            max_iter=500,
            random_state=cfg.seed,
        )
        clf.fit(z[tr], y[tr])
        layers = [
            (w.astype(np.float64), b.astype(np.float64))
            for w, b in zip(clf.coefs_, clf.intercepts_)
        ]
    scorer = Scorer(mean=mean, scale=scale, layers=layers, meta={})
    report: dict[str, Any] = {"train": _metrics(y[tr], scorer.score_features(x[tr]))}
    if len(va):
        report["heldout"] = _metrics(y[va], scorer.score_features(x[va]))
    return scorer, report


def run_train_scorer(cfg: ScorerTrainConfig) -> dict[str, Any]:
    """``glomssl curate train``: features of both folders -> fit -> write the scorer JSON."""
    cfg.validate()
    if not cfg.positives or not cfg.negatives:
        raise GlomsslError("curate train needs --positives DIR and --negatives DIR")
    if not str(cfg.out).endswith(".json"):
        raise GlomsslError(f"--out {cfg.out} must be a .json file (scorers are saved as JSON)")
    xp, skip_p = folder_features(cfg.positives, cfg.quiet)
    xn, skip_n = folder_features(cfg.negatives, cfg.quiet)
    x = np.concatenate([xp, xn])
    y = np.concatenate([np.ones(len(xp), dtype=np.int64), np.zeros(len(xn), dtype=np.int64)])
    scorer, report = train_scorer(x, y, cfg)
    scorer.meta = {
        "model": cfg.model,
        "trained_on": {"positives": str(cfg.positives), "negatives": str(cfg.negatives)},
        "counts": {"positives": int(len(xp)), "negatives": int(len(xn))},
        "config": dataclasses.asdict(cfg),
        "metrics": report,
    }
    save_scorer(cfg.out, scorer)
    return {
        "out": str(cfg.out),
        "positives": int(len(xp)),
        "negatives": int(len(xn)),
        "skipped": len(skip_p) + len(skip_n),
        **report,
    }
