"""``glomssl finetune cls``: Glo-In-One's grouped cross-validation protocol, label fractions, export.

Protocol (Yao et al. 2022, section on GGS classification), for ``--folds K`` >= 2:

1. the labelled images are split into K folds grouped by patient (or slide) and stratified by class
   (:func:`glomssl.data.splits.grouped_kfold`, seeded: every run with the same data and seed gets the
   same folds, so the rows of a study are comparable);
2. each fold's non-test part is split 75/25 into training and validation, grouped again;
3. the label fraction is drawn from the training part only, stratified, at least one image per class
   (the validation part is kept whole for model selection, as the issue specifies);
4. the model is trained (``linear``, ``finetune`` or ``scratch``); the epoch with the best validation
   balanced accuracy is kept; the test fold is scored once.

The run folder gets ``config.yaml``, ``metrics.jsonl`` (one line per epoch and fold), ``folds/fold-K.json``
(each finished fold: ``--resume`` skips them), ``predictions.jsonl`` (out-of-fold predictions),
``results.json`` (per fold, mean and std, pooled confusion matrix), ``confusion.png`` and the exported
classifier ``model.safetensors`` + ``model.json``. With ``--export`` (the default) that classifier is
trained after the folds on all the data (an inner grouped 75/25 split picks its epoch); ``--folds 1``
does only that.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from glomssl.config import opt
from glomssl.engine import HardwareConfig
from glomssl.errors import GlomsslError
from glomssl.models.backbones import ARCHS

Mode = Literal["linear", "finetune", "scratch"]

#: per-mode defaults (epochs, lr): the linear layer on standardised features learns fast; the
#: full-network lr is Glo-In-One's Adam 1e-4 (finetune: the head at 1e-3, the trunk at 1e-3 x 0.1)
DEFAULTS: dict[str, tuple[int, float]] = {
    "linear": (100, 1e-3),
    "finetune": (30, 1e-3),
    "scratch": (70, 1e-4),
}
#: config keys that may differ between a run and its --resume
RESUMABLE = ("resume", "quiet", "hardware", "workers", "export")


@dataclass
class FinetuneClsConfig:
    """Options of ``glomssl finetune cls`` (defaults: Glo-In-One's recipe where it gives one)."""

    data: str = ""
    out: str = ""
    backbone: str | None = None  # a `glomssl pretrain` run or backbone.safetensors; none: scratch
    mode: Mode = "linear"
    arch: str = "resnet18"  # scratch only (otherwise the backbone's)
    classes: list[str] | None = None  # class names in order; default: sorted labels
    label_fraction: float = opt(1.0, gt=0, le=1)
    folds: int = opt(5, ge=1)
    group: str | None = None  # default: patient, else slide
    holdout: float = opt(0.25, gt=0, lt=1)  # validation share of each fold's non-test part
    loss: Literal["focal", "ce"] = "focal"
    focal_gamma: float = opt(2.5, ge=0, le=10)
    balance: Literal["weights", "sampler", "none"] = "weights"
    epochs: int | None = opt(None, ge=1)
    lr: float | None = opt(None, gt=0, le=10)
    backbone_lr_scale: float = opt(0.1, gt=0, le=1)
    weight_decay: float = opt(0.0, ge=0, le=1)
    batch_size: int = opt(64, ge=1)
    image_size: int | None = opt(None, ge=32, le=2048)  # default: the backbone's, else 224
    export: bool = True
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    workers: int = opt(2, ge=0)
    seed: int = opt(0, ge=0)
    resume: bool = False
    quiet: bool = False

    @property
    def backbone_path(self) -> str | None:
        b = (self.backbone or "").strip()
        return None if b.lower() in ("", "none") else b

    @property
    def n_epochs(self) -> int:
        return self.epochs or DEFAULTS[self.mode][0]

    @property
    def base_lr(self) -> float:
        return self.lr or DEFAULTS[self.mode][1]

    def validate(self) -> None:
        if not self.data:
            raise GlomsslError(
                "--data is required: a labels CSV or a manifest with a 'label' field"
            )
        if not self.out:
            raise GlomsslError("--out is required: the run folder to write")
        if self.arch not in ARCHS:
            raise GlomsslError(f"unknown --arch {self.arch!r}; choose one of {', '.join(ARCHS)}")
        if self.mode == "scratch" and self.backbone_path:
            raise GlomsslError("--mode scratch starts from random weights; drop --backbone")
        if self.mode != "scratch" and not self.backbone_path:
            raise GlomsslError(
                f"--mode {self.mode} needs --backbone (a `glomssl pretrain` run); "
                "use --mode scratch to train without one"
            )
        self.hardware.validate()


def _log(cfg: FinetuneClsConfig, msg: str) -> None:
    from glomssl.runs import is_rank_zero

    if not cfg.quiet and is_rank_zero():
        print(msg, file=sys.stderr, flush=True)


def _comparable(cfg: Any) -> dict[str, Any]:
    from glomssl.config import to_dict

    return {k: v for k, v in to_dict(cfg).items() if k not in RESUMABLE}


def _prepare_out(cfg: FinetuneClsConfig, out: Path) -> dict[int | str, dict[str, Any]]:
    """Write config.yaml; on --resume return the finished folds (options must match), else clear."""
    import json

    import yaml

    from glomssl.config import save_config
    from glomssl.fsutil import atomic_write_text, ensure_writable_dir
    from glomssl.runs import is_rank_zero

    ensure_writable_dir(out)
    folds_dir = out / "folds"
    done: dict[int | str, dict[str, Any]] = {}
    old = out / "config.yaml"
    if cfg.resume and old.is_file():
        try:
            prev = yaml.safe_load(old.read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            prev = None
        if not isinstance(prev, dict):
            raise GlomsslError(
                f"--resume: {old} is not a readable run config; choose a new --out, or run "
                "without --resume to start over"
            )
        now = _comparable(cfg)
        diff = sorted(k for k in now if prev.get(k) != now[k])
        if diff:
            raise GlomsslError(
                f"--resume: {out} was run with other options ({', '.join(diff)} differ); "
                "repeat the same options or choose a new --out"
            )
        for f in sorted(folds_dir.glob("*.json")):
            try:
                rec = json.loads(f.read_text(encoding="utf-8"))
            except (OSError, ValueError):  # a damaged record: that fold is trained again
                continue
            if isinstance(rec, dict) and "fold" in rec:
                done[rec["fold"]] = rec
        metrics = out / "metrics.jsonl"
        if metrics.is_file() and is_rank_zero():  # drop the lines of the fold that was cut short
            keep = []
            for line in metrics.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if row.get("fold") in done or "fold" not in row:
                    keep.append(line)
            atomic_write_text(metrics, "".join(k + "\n" for k in keep))
    elif is_rank_zero():
        for f in folds_dir.glob("*.json"):
            f.unlink()
        (out / "metrics.jsonl").unlink(missing_ok=True)
    if is_rank_zero():
        folds_dir.mkdir(exist_ok=True)
        save_config(cfg, out / "config.yaml")
    return done


def _check_classes(y: np.ndarray, classes: list[str], where: str, cfg: FinetuneClsConfig) -> None:
    missing = [c for i, c in enumerate(classes) if not (y == i).any()]
    if missing:
        raise GlomsslError(
            f"{where} has no image of class {missing[0]!r} (its images sit in too few "
            f"{cfg.group or 'groups'}); lower --folds or add {cfg.group or 'group'}s of that class"
        )


def _split(
    cfg: FinetuneClsConfig,
    y: np.ndarray,
    g: np.ndarray,
    trval: np.ndarray,
    k: int | str,
    classes: list[str],
) -> tuple[np.ndarray, np.ndarray]:
    """Inner grouped train/validation split of ``trval``, then the label fraction of the train part."""
    from glomssl.data.splits import grouped_holdout, stratified_fraction

    seed = cfg.seed + (k if isinstance(k, int) else 1000)
    tr_i, va_i = grouped_holdout(y[trval], g[trval], cfg.holdout, seed=seed)
    tr, va = trval[tr_i], trval[va_i]
    where = f"fold {k + 1}'s training part" if isinstance(k, int) else "the training part"
    _check_classes(y[tr], classes, where, cfg)
    sub = tr[stratified_fraction(y[tr], cfg.label_fraction, seed=seed)]
    return sub, va


def run_finetune_cls(cfg: FinetuneClsConfig) -> dict[str, Any]:
    """Run the protocol of ``cfg`` and export the classifier; returns the results summary."""
    from glomssl.data.sources import write_skipped
    from glomssl.data.splits import grouped_kfold
    from glomssl.finetune.classifier.data import load_labelled
    from glomssl.finetune.classifier.linear import write_json
    from glomssl.finetune.classifier.metrics import confusion_png, summarise
    from glomssl.finetune.classifier.trainers import Trainers
    from glomssl.runs import is_rank_zero

    cfg.validate()
    t0 = time.perf_counter()
    out = Path(cfg.out)
    data = load_labelled(cfg.data, cfg.classes, cfg.group)
    if cfg.folds >= 2:
        splits = grouped_kfold(data.labels, data.groups, cfg.folds, seed=cfg.seed)
    else:
        splits = []
    trainers = Trainers(cfg, data, out)  # a bad --backbone stops here, before any file is written
    done = _prepare_out(cfg, out)
    if is_rank_zero():
        write_skipped(out, data.skipped)
    if data.group_key is None:
        _log(
            cfg,
            "warning: no patient/slide column: images are split one by one, so crops of one "
            "slide can land in training and test (pass --group COLUMN)",
        )
    size = trainers.image_size
    _log(
        cfg,
        f"{len(data)} images ({', '.join(f'{c} {n}' for c, n in data.counts().items())}), "
        f"{len(np.unique(data.groups))} groups; {len(data.skipped)} unreadable skipped; "
        f"mode {cfg.mode}, {cfg.label_fraction:.0%} of the labels, {size} px",
    )
    trainers.prepare_inputs()
    y, g = data.labels, data.groups
    records: list[dict[str, Any]] = []
    for k, (trval, te) in enumerate(splits):
        if k in done:
            _log(cfg, f"fold {k + 1}/{len(splits)}: finished earlier, not redone")
            records.append(done[k])
            continue
        tf = time.perf_counter()
        sub, va = _split(cfg, y, g, trval, k, data.classes)
        fit = trainers.fit(sub, va, k)
        rec = {
            "fold": k,
            "n_train": int(len(trval) - len(va)),
            "n_train_labelled": int(len(sub)),
            "n_val": int(len(va)),
            "n_test": int(len(te)),
            "test_groups": sorted({str(x) for x in g[te]}),
            "best_epoch": fit.best_epoch,
            "val": fit.val,
            "test": trainers.evaluate(fit, te),
            "test_index": te.tolist(),
            "test_prob": trainers.probs(fit, te).round(6).tolist(),
            "seconds": round(time.perf_counter() - tf, 2),
        }
        if is_rank_zero():
            write_json(out / "folds" / f"fold-{k}.json", rec)
        records.append(rec)
        _log(
            cfg,
            f"fold {k + 1}/{len(splits)}: {len(sub)} labelled training images, "
            f"{len(va)} validation, {len(te)} test; best epoch {fit.best_epoch}; "
            f"test balanced accuracy {rec['test']['balanced_accuracy']:.3f} ({rec['seconds']:.0f} s)",
        )
    summary: dict[str, Any] = {
        "run": str(out),
        "mode": cfg.mode,
        "label_fraction": cfg.label_fraction,
        "classes": data.classes,
        "counts": data.counts(),
        "n_images": len(data),
        "n_groups": int(len(np.unique(g))),
        "group": data.group_key,
        "skipped": len(data.skipped),
        "image_size": size,
        "backbone": trainers.backbone_info,
        "chance_balanced_accuracy": 1.0 / len(data.classes),
        "folds": len(splits),
    }
    if records:
        tests = [r["test"] for r in records]
        summary["per_fold"] = [
            {
                "fold": r["fold"],
                "n_train_labelled": r["n_train_labelled"],
                "best_epoch": r["best_epoch"],
                "val_balanced_accuracy": r["val"]["balanced_accuracy"],
                **{
                    m: r["test"][m]
                    for m in ("n", "balanced_accuracy", "macro_f1", "auc", "accuracy")
                },
            }
            for r in records
        ]
        summary["mean"] = summarise(tests)
        pooled = np.sum([np.asarray(t["confusion"]) for t in tests], axis=0)
        summary["confusion"] = pooled.tolist()
        if is_rank_zero():
            _write_predictions(out, data, records)
            confusion_png(
                pooled,
                data.classes,
                out / "confusion.png",
                f"{cfg.mode}, {cfg.label_fraction:.0%} labels: test folds pooled",
            )
    if cfg.export or not splits:
        final = done.get("final") if (out / "model.safetensors").is_file() else None
        if final is None:
            trval = np.arange(len(data))
            sub, va = _split(cfg, y, g, trval, "final", data.classes)
            fit = trainers.fit(sub, va, "final")
            final = {
                "fold": "final",
                "n_train_labelled": int(len(sub)),
                "n_val": int(len(va)),
                "best_epoch": fit.best_epoch,
                "val": fit.val,
            }
            if is_rank_zero():
                trainers.export(
                    fit, out / "model.safetensors", {**final, "cv": summary.get("mean")}
                )
                write_json(
                    out / "folds" / "final.json",
                    {
                        **final,
                        "val_index": va.tolist(),
                        "val_prob": trainers.probs(fit, va).round(6).tolist(),
                    },
                )
            _log(
                cfg,
                f"exported {out / 'model.safetensors'} (best epoch {fit.best_epoch}, "
                f"validation balanced accuracy {fit.val['balanced_accuracy']:.3f})",
            )
        summary["final"] = {
            k: v for k, v in final.items() if k not in ("fold", "val_index", "val_prob")
        }
        summary["model"] = str(out / "model.safetensors")
        if not splits and is_rank_zero():
            cm = np.asarray(final["val"]["confusion"])
            confusion_png(
                cm,
                data.classes,
                out / "confusion.png",
                f"{cfg.mode}, {cfg.label_fraction:.0%} labels: validation part",
            )
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    if is_rank_zero():
        write_json(out / "results.json", summary)
    return summary


def _write_predictions(out: Path, data: Any, records: list[dict[str, Any]]) -> None:
    """``predictions.jsonl``: each image's out-of-fold prediction (the fold that held it out)."""
    from glomssl.manifest import write_jsonl

    rows = []
    for r in records:
        for i, p in zip(r["test_index"], r["test_prob"], strict=True):
            rows.append(
                {
                    "path": data.rows[i]["path"],
                    "label": data.classes[int(data.labels[i])],
                    "group": str(data.groups[i]),
                    "fold": r["fold"],
                    "prediction": data.classes[int(np.argmax(p))],
                    "probabilities": {
                        c: round(float(v), 6) for c, v in zip(data.classes, p, strict=True)
                    },
                }
            )
    rows.sort(key=lambda row: str(row["path"]))
    write_jsonl(out / "predictions.jsonl", rows)
