"""Linear and kNN probes of frozen embeddings with group-aware splits.

The question a probe answers: how much label information do the embeddings carry, and how much of it
can a simple classifier pick up from few labels? Splits are grouped (no slide or patient in both the
training and the test part, since crops of one slide share stain and scanner) and stratified; each
test fold is scored at several label fractions, where the fraction subsamples the training part only.
The test part is never used to choose anything: the logistic regression's C is picked by a grouped
inner cross-validation on the training part.
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from glomssl.config import opt
from glomssl.errors import GlomsslError
from glomssl.fsutil import atomic_write_text


@dataclass
class ProbeConfig:
    """Options of ``glomssl probe``."""

    embeddings: str = ""
    labels: str = ""
    group: str = "slide"
    label_fractions: list[float] = opt(factory=lambda: [0.01, 0.05, 0.1, 0.25, 1.0], gt=0, le=1)
    folds: int = opt(5, ge=2)
    repeats: int = opt(3, ge=1, le=1000)
    knn_k: int = opt(20, ge=1)  # more than a training part holds: clamped, with a note
    probes: list[str] = field(default_factory=lambda: ["linear", "knn"])
    seed: int = opt(0, ge=0)
    out: str | None = None

    def validate(self) -> None:
        if not self.label_fractions or any(not 0 < f <= 1 for f in self.label_fractions):
            raise GlomsslError("--label-fraction values must lie in (0, 1], e.g. 0.1 for 10%")
        if self.folds < 2:
            raise GlomsslError(f"--folds must be at least 2, got {self.folds}")
        if not self.probes or set(self.probes) - {"linear", "knn"}:
            raise GlomsslError(f"probes must be among linear, knn; got {self.probes}")
        if self.knn_k < 1:
            raise GlomsslError(f"--knn-k must be at least 1, got {self.knn_k}")


def load_labels(path: str | os.PathLike[str], what: str = "--labels") -> dict[str, dict[str, Any]]:
    """Labels keyed by image path: a CSV with an ``image`` or ``path`` column, or a JSONL manifest.

    ``what`` is the option that named the file (``--labels``, ``--probe-data``), for the errors.
    """
    import csv

    from glomssl.data.images import IMAGE_EXTENSIONS

    p = Path(path)
    wanted = "a labels CSV ('image' or 'path', 'label', ...) or a JSONL manifest"
    if p.is_dir():
        raise GlomsslError(f"{what} {p} is a folder; pass {wanted}")
    if not p.is_file():
        raise GlomsslError(f"{what} {p} does not exist; pass {wanted}")
    if p.suffix.lower() in IMAGE_EXTENSIONS:
        raise GlomsslError(f"{what} {p} is one image; pass {wanted} naming the images")
    if p.stat().st_size == 0:
        raise GlomsslError(f"{what} {p} is empty; pass {wanted} with one row per image")
    rows: list[dict[str, Any]]
    if p.suffix.lower() == ".csv":
        try:
            with open(p, newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise GlomsslError(
                f"{what} {p} is not a readable UTF-8 CSV ({exc}); pass a CSV with "
                "'image' (or 'path') and 'label' columns"
            ) from exc
    else:
        from glomssl.manifest import read_manifest

        rows = read_manifest(p, validate=False)
    if not rows:
        raise GlomsslError(f"{what} {p} holds no rows; pass {wanted} with one row per image")
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        key = r.get("path") or r.get("image")
        if key is None or "label" not in r:
            raise GlomsslError(f"{p}: every row needs 'path' (or 'image') and 'label' columns")
        out[str(key)] = r
    return out


def match_labels(
    paths: list[str], table: dict[str, dict[str, Any]], group: str | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of embedded images that have a label, their labels and groups (by path or file name).

    A path matches a label row if the strings are equal or one ends with the other (embeddings store
    the paths as given to ``glomssl embed``, the CSV relative to its own folder).
    """
    by_name: dict[str, str] = {}
    for k in table:
        by_name.setdefault(Path(k).name, k)
    idx, ys, gs = [], [], []
    for i, p in enumerate(paths):
        key = p if p in table else next((k for k in table if p.endswith("/" + k)), None)
        if key is None:
            key = by_name.get(Path(p).name)
        if key is None:
            continue
        row = table[key]
        idx.append(i)
        ys.append(str(row["label"]))
        if group:
            if group not in row:
                raise GlomsslError(
                    f"labels have no {group!r} column; name one they have (`probe --group`, "
                    "or `pretrain --set probe_group=...`)"
                )
            gs.append(str(row[group]))
        else:
            gs.append(str(i))
    if len(idx) < 4:
        raise GlomsslError(
            f"only {len(idx)} embedded images have labels; check that the labels file "
            "(`probe --labels`, `pretrain --probe-data`) names the same image paths"
        )
    return np.asarray(idx), np.asarray(ys), np.asarray(gs)


def _subsample(y: np.ndarray, frac: float, rng: np.random.Generator) -> np.ndarray:
    """Stratified subsample of indices of ``y`` with at least one (two when possible) per class."""
    keep: list[int] = []
    for c in np.unique(y):
        ci = np.flatnonzero(y == c)
        n = max(min(2, len(ci)), int(round(frac * len(ci))))
        keep.extend(rng.choice(ci, size=min(n, len(ci)), replace=False).tolist())
    return np.sort(np.asarray(keep))


def _fit_linear(x: np.ndarray, y: np.ndarray, g: np.ndarray, seed: int) -> Any:
    """Standardise + logistic regression; C from a grouped inner CV on the training data only."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pipe = make_pipeline(
        StandardScaler(),
        LogisticRegression(solver="liblinear", max_iter=1000, class_weight="balanced"),
    )
    n_groups = len(np.unique(g))
    min_class = min(int((y == c).sum()) for c in np.unique(y))
    if n_groups >= 3 and min_class >= 3:
        search = GridSearchCV(
            pipe,
            {"logisticregression__C": [0.01, 0.1, 1.0]},
            cv=StratifiedGroupKFold(n_splits=min(3, n_groups), shuffle=True, random_state=seed),
            scoring="balanced_accuracy",
        )
        with warnings.catch_warnings():  # inner folds may hold one class; their score is just low
            warnings.simplefilter("ignore")
            search.fit(x, y, groups=g)
        return search.best_estimator_
    pipe.set_params(logisticregression__C=0.1)
    return pipe.fit(x, y)


def _fit_knn(x: np.ndarray, y: np.ndarray, k: int) -> Any:
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer

    return make_pipeline(
        Normalizer(), KNeighborsClassifier(n_neighbors=min(k, len(y)), weights="distance")
    ).fit(x, y)


def _scores(model: Any, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

    pred = model.predict(x)
    out = {
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "macro_f1": float(f1_score(y, pred, average="macro")),
    }
    classes = list(model.classes_)
    if len(np.unique(y)) >= 2:
        prob = model.predict_proba(x)
        if len(classes) == 2:
            out["auc"] = float(roc_auc_score(y == classes[1], prob[:, 1]))
        else:
            out["auc"] = float(roc_auc_score(y, prob, multi_class="ovr", labels=classes))
    return out


def grouped_splits(
    y: np.ndarray, g: np.ndarray, folds: int, repeats: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified group k-fold splits, repeated with different shuffles; no group on both sides.

    Fewer groups than ``folds`` is an error (it used to run on silently with fewer folds).
    """
    from glomssl.data.splits import grouped_kfold

    return grouped_kfold(y, g, folds, seed=seed, repeats=repeats)


def probe_arrays(
    x: np.ndarray,
    y: np.ndarray,
    g: np.ndarray,
    cfg: ProbeConfig,
    splits: list[tuple[np.ndarray, np.ndarray]] | None = None,
) -> dict[str, Any]:
    """Run linear and kNN probes over grouped folds and label fractions; mean and std of each metric.

    ``splits`` are the :func:`grouped_splits` of ``(y, g)`` under ``cfg`` when already computed.
    """
    rng = np.random.default_rng(cfg.seed)
    results: dict[str, dict[str, list[float]]] = {}
    if splits is None:
        splits = grouped_splits(y, g, cfg.folds, cfg.repeats, cfg.seed)
    for tr, te in splits:
        if len(np.unique(y[tr])) < 2:
            continue
        for frac in cfg.label_fractions:
            sub = tr[_subsample(y[tr], frac, rng)]
            for kind in cfg.probes:
                if kind == "linear":
                    model = _fit_linear(x[sub], y[sub], g[sub], cfg.seed)
                else:
                    model = _fit_knn(x[sub], y[sub], cfg.knn_k)
                for m, v in _scores(model, x[te], y[te]).items():
                    results.setdefault(f"{kind}@{frac:g}", {}).setdefault(m, []).append(v)
    table: dict[str, Any] = {}
    for key, metrics in results.items():
        kind, frac_s = key.split("@")
        table[key] = {"probe": kind, "label_fraction": float(frac_s), "n_splits": 0}
        for m, vals in metrics.items():
            table[key][m] = float(np.mean(vals))
            table[key][m + "_std"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
            table[key]["n_splits"] = len(vals)
    return {
        "n_images": int(len(y)),
        "n_groups": int(len(np.unique(g))),
        "classes": {str(c): int((y == c).sum()) for c in np.unique(y)},
        "results": table,
    }


def format_table(report: dict[str, Any]) -> str:
    """The probe report as a fixed-width text table (one row per probe and label fraction)."""
    lines = [f"{'probe':<7} {'labels':>6} {'bal_acc':>14} {'macro_f1':>14} {'auc':>14}"]
    for row in report["results"].values():
        cells = []
        for m in ("balanced_accuracy", "macro_f1", "auc"):
            cells.append(f"{row.get(m, float('nan')):.3f}+-{row.get(m + '_std', 0):.3f}")
        lines.append(
            f"{row['probe']:<7} {row['label_fraction'] * 100:>5g}% "
            + " ".join(f"{c:>14}" for c in cells)
        )
    return "\n".join(lines)


def labelled_images(
    path: str | os.PathLike[str], group: str | None, what: str = "--probe-data"
) -> tuple[list[Path], Any, Any]:
    """Image files, labels and groups from a labels CSV (paths relative to it) or a manifest."""
    table = load_labels(path, what)
    root = Path(path).resolve().parent
    keys = list(table)
    files = [root / k for k in keys]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise GlomsslError(f"{path}: {len(missing)} listed images do not exist, e.g. {missing[0]}")
    _, y, g = match_labels(keys, table, group)
    return files, y, g


def run_probe(cfg: ProbeConfig) -> dict[str, Any]:
    """Load an embeddings npz and a labels file, probe, write JSON (if ``cfg.out``), return the report."""
    cfg.validate()
    p = Path(cfg.embeddings)
    if p.is_dir():
        raise GlomsslError(
            f"--embeddings {p} is a folder; pass the .npz that `glomssl embed` wrote"
        )
    if not p.is_file():
        raise GlomsslError(f"--embeddings {p} does not exist; run `glomssl embed` first")
    not_ours = (
        f"--embeddings {p} is not an .npz of embeddings written by `glomssl embed`; pass the .npz "
        "that `glomssl embed --out` wrote"
    )
    try:
        with np.load(p, allow_pickle=False) as data:
            paths = [str(s) for s in data["paths"]]
            emb = np.asarray(data["embeddings"], dtype=np.float32)
    # numpy's own text is not repeated: for a text or pickle file it advises loading it unsafely
    except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError, EOFError,
            zipfile.BadZipFile) as exc:  # fmt: skip
        raise GlomsslError(not_ours) from exc
    if emb.ndim != 2 or len(emb) != len(paths):
        raise GlomsslError(f"{p}: embeddings must be one row per path; re-run `glomssl embed`")
    bad = ~np.isfinite(emb).all(axis=1)
    if bad.any():
        raise GlomsslError(
            f"{p}: {int(bad.sum())} embeddings hold NaN or inf (e.g. {paths[int(np.argmax(bad))]}); "
            "the encoder diverged: pretrain again with a lower --lr"
        )
    idx, y, g = match_labels(paths, load_labels(cfg.labels, "--labels"), cfg.group or None)
    splits = grouped_splits(y, g, cfg.folds, cfg.repeats, cfg.seed)
    notes = []
    most = max((len(tr) for tr, _ in splits), default=0)
    if "knn" in cfg.probes and cfg.knn_k > most:
        notes.append(
            f"--knn-k {cfg.knn_k} is more than the {most} labelled embeddings of the largest "
            f"training part; the kNN probe used k = {most} or fewer (pass --knn-k {most} or less)"
        )
    if cfg.out:
        from glomssl.fsutil import ensure_writable_dir

        ensure_writable_dir(Path(cfg.out).absolute().parent, "--out's folder")
    report = probe_arrays(emb[idx], y, g, cfg, splits)
    report["embeddings"] = str(p)
    report["labels"] = str(cfg.labels)
    report["group"] = cfg.group
    report["notes"] = notes
    if cfg.out:
        atomic_write_text(cfg.out, json.dumps(report, indent=2) + "\n")
    return report
