from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from glomssl.errors import GlomsslError
from glomssl.ssl.probe import ProbeConfig, format_table, grouped_splits, probe_arrays, run_probe


def _data(n_groups: int = 10, per: int = 12, signal: float = 3.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    groups = np.repeat([f"slide{i}" for i in range(n_groups)], per)
    y = np.array(["GS" if rng.random() < 0.4 else "nonGS" for _ in groups])
    x = rng.normal(size=(len(y), 16)).astype(np.float32)
    x[:, 0] += signal * (y == "GS")
    return x, y, groups


def test_grouped_splits_never_share_a_group() -> None:
    _, y, g = _data()
    splits = grouped_splits(y, g, folds=5, repeats=2, seed=0)
    assert len(splits) == 10
    for tr, te in splits:
        assert not set(g[tr]) & set(g[te])
        assert len(tr) + len(te) == len(y)


def test_probe_finds_signal_and_not_noise() -> None:
    x, y, g = _data(signal=4.0)
    cfg = ProbeConfig(label_fractions=[0.25, 1.0], folds=4, repeats=1)
    good = probe_arrays(x, y, g, cfg)["results"]
    assert good["linear@1"]["balanced_accuracy"] > 0.9
    assert good["knn@1"]["auc"] > 0.8
    rng = np.random.default_rng(1)
    noise = probe_arrays(x, rng.permutation(y), g, cfg)["results"]
    assert noise["linear@1"]["balanced_accuracy"] < 0.7


def test_run_probe_reads_npz_and_csv(tmp_path: Path) -> None:
    x, y, g = _data()
    paths = [f"images/c{i}.png" for i in range(len(y))]
    np.savez(tmp_path / "e.npz", paths=np.asarray(paths), embeddings=x)
    lines = ["image,label,slide"] + [f"{p},{lab},{s}" for p, lab, s in zip(paths, y, g)]
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    cfg = ProbeConfig(
        embeddings=str(tmp_path / "e.npz"),
        labels=str(tmp_path / "labels.csv"),
        label_fractions=[0.1, 1.0],
        folds=3,
        repeats=1,
        out=str(tmp_path / "p.json"),
    )
    rep = run_probe(cfg)
    assert set(rep["results"]) == {"linear@0.1", "linear@1", "knn@0.1", "knn@1"}
    assert json.loads((tmp_path / "p.json").read_text())["n_groups"] == 10
    assert "linear" in format_table(rep)
    with pytest.raises(GlomsslError, match="no 'patient' column"):
        run_probe(ProbeConfig(embeddings=cfg.embeddings, labels=cfg.labels, group="patient"))


def test_bad_fraction_rejected() -> None:
    with pytest.raises(GlomsslError, match="label-fraction"):
        ProbeConfig(label_fractions=[1.5]).validate()


def test_more_folds_than_groups_and_nan_embeddings_are_refused(tmp_path) -> None:
    import numpy as np
    import pytest

    from glomssl.config import build_config
    from glomssl.errors import GlomsslError
    from glomssl.ssl.probe import ProbeConfig, load_labels, run_probe

    paths = [f"{i}.png" for i in range(12)]
    emb = np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32)
    np.savez(tmp_path / "e.npz", paths=np.array(paths), embeddings=emb)
    rows = ["image,label,slide"] + [f"{p},{'ab'[i % 2]},s{i % 3}" for i, p in enumerate(paths)]
    (tmp_path / "l.csv").write_text("\n".join(rows) + "\n")
    cfg = build_config(
        ProbeConfig,
        overrides={
            "embeddings": str(tmp_path / "e.npz"),
            "labels": str(tmp_path / "l.csv"),
            "folds": 5,
            "group": "slide",
        },
    )
    with pytest.raises(GlomsslError, match="needs at least 5 groups, but the data has 3"):
        run_probe(cfg)
    emb[3, 1] = np.nan
    np.savez(tmp_path / "e.npz", paths=np.array(paths), embeddings=emb)
    with pytest.raises(GlomsslError, match="1 embeddings hold NaN or inf"):
        run_probe(cfg)
    (tmp_path / "bin.csv").write_bytes(b"\xc0\xff\x00 binary")
    with pytest.raises(GlomsslError, match="not a readable UTF-8 CSV"):
        load_labels(tmp_path / "bin.csv")
    (tmp_path / "e.npz").write_bytes(b"PK\x03\x04 cut short")  # a zip's start, then nothing
    with pytest.raises(GlomsslError, match="is not an .npz of embeddings"):
        run_probe(cfg)
    with pytest.raises(GlomsslError, match="--repeats must be >= 1"):
        build_config(ProbeConfig, overrides={"embeddings": "x", "labels": "y", "repeats": 0})


def test_spread_is_the_sample_standard_deviation_over_splits() -> None:
    """``+-`` is the sample standard deviation (n - 1) of the per-split scores, as a paper quotes it."""
    x, y, g = _data(signal=1.0)
    cfg = ProbeConfig(embeddings="-", labels="-", folds=3, repeats=1, label_fractions=[1.0])
    splits = grouped_splits(y, g, cfg.folds, cfg.repeats, cfg.seed)
    each = [probe_arrays(x, y, g, cfg, [s])["results"]["linear@1"] for s in splits]
    both = probe_arrays(x, y, g, cfg, splits)["results"]["linear@1"]
    vals = [r["balanced_accuracy"] for r in each]
    assert len(set(vals)) > 1  # the splits differ, so the two kinds of spread differ too
    assert both["balanced_accuracy"] == pytest.approx(np.mean(vals))
    assert both["balanced_accuracy_std"] == pytest.approx(np.std(vals, ddof=1))
    assert both["balanced_accuracy_std"] != pytest.approx(np.std(vals))
