"""The learned curation scorer of ``glomssl curate train``: hand-made features + a small classifier.

Glo-In-One kept mined panels that a curator scored >= 0.7. glomssl's curator is deliberately small so
it trains in seconds on a CPU from two folders (positives, e.g. glomerulus crops; negatives, e.g. other
tissue, charts, other modalities) and needs no pretrained network:

* features: :mod:`glomssl.mining.panel_features` (curation statistics, colour histograms, LBP
  texture, gradient magnitudes on a 128 x 128 resize);
* negatives: the user's folder plus, by default, panels drawn here (:mod:`glomssl.mining.drawn_panels`:
  gradient bar charts, false-colour maps, grey micrographs with colour insets, shaded schematics,
  plots, text), because a scorer that never saw a chart scores one as tissue;
* classifier: standardisation + logistic regression (default) or a one-hidden-layer MLP, fitted with
  scikit-learn and evaluated on a stratified held-out split.

The saved model is plain JSON (``format: glomssl-curate-scorer``): feature names, standardisation,
weights and held-out metrics (accuracy beside the majority-class baseline, balanced accuracy, AUC;
badly imbalanced classes are reported as a warning, since accuracy then says nothing). Nothing is unpickled; :func:`load_scorer` refuses any other file with
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
from glomssl.data.images import load_rgb
from glomssl.errors import GlomsslError
from glomssl.mining.panel_features import FEATURE_NAMES, image_features

FORMAT = "glomssl-curate-scorer"
VERSION = 1
#: Classes this unequal (minority / majority) make accuracy meaningless: `curate train` warns.
IMBALANCE_RATIO = 0.2
#: Drawn non-tissue negatives added to the user's by default (``--drawn-negatives``).
DRAWN_DEFAULT = 120


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
    if p.is_dir():
        raise GlomsslError(
            f"--scorer {p} is a folder; pass the scorer .json that `curate train` wrote"
        )
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
    val_fraction: float = opt(0.2, ge=0, lt=0.9)
    c: float = opt(1.0, gt=0)
    hidden: int = opt(32, ge=1)
    drawn_negatives: int = opt(DRAWN_DEFAULT, ge=0)
    seed: int = opt(0, ge=0)
    quiet: bool = False

    def validate(self) -> None:
        """Bounds are enforced by :func:`glomssl.config.check_values` (field metadata)."""


def folder_features(
    folder: str | os.PathLike[str], quiet: bool = True
) -> tuple[np.ndarray, list[str]]:
    """Features of every readable image below ``folder``: ((N, F) array, skipped file names)."""
    from glomssl.manifest import list_images
    from glomssl.mining.folder_stage import progress_iter

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


def drawn_features(n: int, seed: int) -> np.ndarray:
    """Features of ``n`` drawn non-tissue panels (:mod:`glomssl.mining.drawn_panels`): (n, F)."""
    from glomssl.mining.drawn_panels import drawn_panels

    rows = [image_features(im) for _, im in drawn_panels(n, seed=seed)]
    return np.asarray(rows, dtype=np.float64).reshape(-1, len(FEATURE_NAMES))


def _metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Accuracy beside its majority-class baseline, balanced accuracy and AUC (0.5 = chance)."""
    from sklearn.metrics import roc_auc_score

    pred = p >= 0.5
    out: dict[str, float] = {"n": int(len(y)), "accuracy": float((pred == (y == 1)).mean())}
    out["majority_baseline"] = float(max((y == 1).mean(), (y == 0).mean()))
    recalls = [float((pred[y == c] == bool(c)).mean()) for c in (0, 1) if (y == c).any()]
    out["balanced_accuracy"] = float(np.mean(recalls))
    if len(set(y.tolist())) == 2:
        out["auc"] = float(roc_auc_score(y, p))
    return out


def imbalance_warning(n_pos: int, n_neg: int) -> str | None:
    """A warning when one class is far smaller than the other (None when balanced enough)."""
    small, large = sorted((n_pos, n_neg))
    if large and small / large < IMBALANCE_RATIO:
        return (
            f"classes are badly imbalanced ({n_pos} positives vs {n_neg} negatives): accuracy "
            "says little (see balanced accuracy and the majority baseline); add examples of the "
            "smaller class"
        )
    return None


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
    """``glomssl curate train``: features of both folders (+ drawn negatives) -> fit -> scorer JSON."""
    from glomssl.config import check_values

    check_values(cfg)
    cfg.validate()
    if not cfg.positives or not cfg.negatives:
        raise GlomsslError("curate train needs --positives DIR and --negatives DIR")
    if not str(cfg.out).endswith(".json"):
        raise GlomsslError(f"--out {cfg.out} must be a .json file (scorers are saved as JSON)")
    xp, skip_p = folder_features(cfg.positives, cfg.quiet)
    xn, skip_n = folder_features(cfg.negatives, cfg.quiet)
    xd = drawn_features(cfg.drawn_negatives, cfg.seed)
    x = np.concatenate([xp, xn, xd])
    n_neg = len(xn) + len(xd)
    y = np.concatenate([np.ones(len(xp), dtype=np.int64), np.zeros(n_neg, dtype=np.int64)])
    warnings = [w for w in [imbalance_warning(len(xp), n_neg)] if w]
    scorer, report = train_scorer(x, y, cfg)
    scorer.meta = {
        "model": cfg.model,
        "trained_on": {"positives": str(cfg.positives), "negatives": str(cfg.negatives)},
        "counts": {"positives": int(len(xp)), "negatives": int(len(xn)), "drawn": int(len(xd))},
        "config": dataclasses.asdict(cfg),
        "metrics": report,
        "warnings": warnings,
    }
    save_scorer(cfg.out, scorer)
    return {
        "out": str(cfg.out),
        "positives": int(len(xp)),
        "negatives": int(len(xn)),
        "drawn_negatives": int(len(xd)),
        "skipped": len(skip_p) + len(skip_n),
        "warnings": warnings,
        **report,
    }
