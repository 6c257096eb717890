"""``glomssl dedup``: drop exact, perceptual-hash and embedding near-duplicates of a FOLDER or MANIFEST.

Three kinds of links between rows, each optional (``methods``):

* ``sha256``: identical file bytes. The bytes are hashed here; a manifest's ``sha256`` field is not
  trusted (a stale value would drop a different image as a "duplicate"); rows whose field disagrees
  are counted (``rehashed``) and written with the right hash.
* ``phash``: 64-bit DCT perceptual hashes within ``phash_threshold`` bits
  (:mod:`glomssl.mining.image_hashes`).
* ``embedding``: cosine similarity between image embeddings, from ``--embeddings FILE.npz``
  (``glomssl embed``) or the built-in tiny-image descriptor, searched exactly up to ``exact_max`` rows
  and by an inverted-file join beyond (:mod:`glomssl.mining.embedding_search`). The threshold is
  ``cosine`` raised, when the embedding is crowded, to pairs ``1 / nn_ratio`` times closer than the
  typical 3rd-nearest neighbour (a printed warning gives the numbers), and the run is refused when
  embedding links alone would drop more than ``max_embedding_drop`` of the rows (``--force``
  accepts; sets under 20 embedded rows are too small to judge and are not refused).

Links are merged into groups (:mod:`glomssl.mining.dup_groups`); each group keeps its largest (or
best-scored) row and every other row is recorded in ``dropped.jsonl`` with the row it was dropped in
favour of (``dup_of``), the link that reached it (``reason``, ``via``, ``distance``/``similarity``)
and its ``group``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

import numpy as np

from glomssl.config import opt
from glomssl.errors import GlomsslError
from glomssl.mining.dup_groups import METHODS, PRIORITY, Links, group_rows, sha_links
from glomssl.mining.folder_stage import FeatureCache, Row

_CACHE_KIND = "dedup-v2"  # v2: width and height instead of the pixel area


@dataclasses.dataclass
class DedupConfig:
    """Options of ``glomssl dedup``."""

    input: str = ""
    out: str = ""
    embeddings: str | None = None
    methods: list[str] = dataclasses.field(default_factory=lambda: list(METHODS))
    phash_threshold: int = opt(6, ge=0, le=64)
    cosine: float = opt(0.95, gt=-1, le=1)
    nn_ratio: float = opt(0.1, ge=0, lt=1)
    max_embedding_drop: float = opt(0.2, ge=0, le=1)
    force: bool = False
    exact_max: int = opt(20_000, ge=0)
    nlist: int = opt(0, ge=0)
    nprobe: int = opt(2, ge=1)
    batch: int = opt(4096, ge=1)
    keep: Literal["largest", "best"] = "largest"
    quiet: bool = False

    def validate(self) -> None:
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise GlomsslError(
                f"--methods {','.join(self.methods)}: choose from {','.join(METHODS)}"
            )


def image_keys(image: Path, sha: str, cache: FeatureCache) -> tuple[int, int, int, np.ndarray]:
    """(width, height, pHash, tiny descriptor (768,)) of one image; cached by sha256 so reruns
    resume without opening it again."""
    from glomssl.data.images import load_rgb
    from glomssl.mining.image_hashes import phash, tiny_descriptor

    hit = cache.get(_CACHE_KIND, sha)
    if hit is not None and len(hit) == 24 + 768 * 4:
        w, h, ph = np.frombuffer(hit[:24], dtype="<u8")
        return int(w), int(h), int(ph), np.frombuffer(hit[24:], dtype="<f4").copy()
    img = load_rgb(image)
    ph, vec = phash(img), tiny_descriptor(img).astype("<f4")
    cache.put(
        _CACHE_KIND, sha, np.array([img.width, img.height, ph], "<u8").tobytes() + vec.tobytes()
    )
    return img.width, img.height, ph, vec


def _row_score(row: Row) -> float:
    for key in ("curate_score", "score"):
        v = row.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool):
            return float(v)
    return float("nan")


def _embedding_links(
    emb: np.ndarray, sel: np.ndarray, cfg: DedupConfig, info: dict[str, Any]
) -> Links:
    """Calibrate the threshold on ``emb`` (unit rows of the rows ``sel``) and link pairs above it."""
    from glomssl.mining.embedding_search import (
        CALIBRATE_MIN_ROWS,
        SCALE_RANK,
        calibrated_threshold,
        cosine_pairs,
        neighbour_scale,
    )

    scale = float("nan")
    if cfg.nn_ratio > 0 and len(emb) >= CALIBRATE_MIN_ROWS:
        scale = neighbour_scale(emb)
    threshold = calibrated_threshold(cfg.cosine, scale, cfg.nn_ratio)
    info["embedding_threshold"] = round(threshold, 6)
    info["neighbour_cosine"] = None if np.isnan(scale) else round(1.0 - scale, 6)
    if threshold > cfg.cosine:
        info["warnings"].append(
            f"embedding: cosine >= {cfg.cosine} would link ordinary neighbours here (median "
            f"cosine to the {SCALE_RANK}rd-nearest neighbour {1.0 - scale:.4f}); linking only pairs "
            f"at cosine >= {threshold:.5f} ({cfg.nn_ratio:g} x that distance; --nn-ratio)"
        )
    i, j, s, search = cosine_pairs(
        emb, threshold, cfg.exact_max, cfg.nlist, cfg.nprobe, cfg.batch, cfg.quiet
    )
    info.update(search)
    kind = np.full(len(i), PRIORITY["embedding"], np.int8)
    return Links(sel[i], sel[j], kind, s.astype(np.float64))


def _measure_rows(
    pairs: list[tuple[Path, Row]], cfg: DedupConfig, methods: list[str], out_dir: Path, desc: bool
) -> dict[str, Any]:
    """Hash / size / fingerprint every row that the chosen methods need; unreadable rows skipped."""
    from glomssl.mining.folder_stage import file_hash, header_size, progress_iter

    n = len(pairs)
    need_hash = "sha256" in methods or "phash" in methods or desc
    need_pixels = "phash" in methods or desc
    m: dict[str, Any] = {
        "valid": np.ones(n, bool),
        "shas": [None] * n,
        "stale": np.zeros(n, bool),
        "dims": [None] * n,
        "hashes": np.zeros(n, np.uint64),
        "desc": np.zeros((n, 768), np.float32) if desc else None,
        "skipped": [],
    }
    with FeatureCache(out_dir / ".dedup-cache.sqlite") as cache:
        for k in progress_iter(list(range(n)), cfg.quiet, "dedup hashes"):
            image, row = pairs[k]
            try:
                if need_hash:
                    m["shas"][k], m["stale"][k] = file_hash(image, row)
                if need_pixels:
                    w, h, m["hashes"][k], vec = image_keys(image, m["shas"][k], cache)
                    if m["desc"] is not None:
                        m["desc"][k] = vec
                elif isinstance(row.get("width"), int) and isinstance(row.get("height"), int):
                    w, h = row["width"], row["height"]
                else:  # a folder row: its size (and readability) from the header
                    w, h = header_size(image)
            except GlomsslError as exc:
                m["skipped"].append({"path": str(image), "reason": str(exc)})
                m["valid"][k] = False
                continue
            m["dims"][k] = (w, h)
    m["sizes"] = np.array([float(d[0]) * d[1] if d else 0.0 for d in m["dims"]])
    return m


def run_dedup(cfg: DedupConfig) -> dict[str, Any]:
    """De-duplicate a FOLDER or MANIFEST into ``cfg.out``; return a summary dict.

    Writes ``manifest.jsonl`` (kept rows, all fields; images outside OUT hard-linked into
    OUT/images/), ``dropped.jsonl`` (input rows + absolute ``image``, ``dup_of`` and ``via`` as input
    paths, ``reason``, ``distance``/``similarity``, ``group``), ``skipped.jsonl`` (unreadable images,
    when there are any) and ``dedup.yaml``. Deterministic: reruns write the same bytes.
    """
    from glomssl.config import check_values, save_config
    from glomssl.fsutil import ensure_writable_dir
    from glomssl.manifest import write_jsonl, write_manifest
    from glomssl.mining.embedding_search import (
        CALIBRATE_MIN_ROWS,
        load_embeddings,
        normalize_rows,
    )
    from glomssl.mining.folder_stage import (
        check_not_overwriting,
        output_row,
        read_input,
        write_skip_list,
    )

    check_values(cfg)
    cfg.validate()
    if not cfg.input or not cfg.out:
        raise GlomsslError("dedup needs --input FOLDER|MANIFEST and --out DIR")
    methods = [m for m in METHODS if m in cfg.methods]
    use_emb = "embedding" in methods
    ext_paths: dict[str, int] = {}
    ext_emb = None
    if use_emb and cfg.embeddings:
        names, ext_emb = load_embeddings(cfg.embeddings)
        ext_paths = {p: k for k, p in enumerate(names)}
    check_not_overwriting(cfg.input, cfg.out)
    pairs, src_dir, repeats = read_input(cfg.input, cfg.out, "dedup")
    n = len(pairs)
    out_dir = ensure_writable_dir(cfg.out).resolve()
    rows = [r for _, r in pairs]
    m = _measure_rows(pairs, cfg, methods, out_dir, desc=use_emb and ext_emb is None)
    valid, shas = m["valid"], m["shas"]
    if n and not valid.any():
        write_skip_list(out_dir, m["skipped"])
        raise GlomsslError(
            f"none of the {n} images of {cfg.input} could be read (e.g. "
            f"{m['skipped'][0]['reason']}); see {out_dir / 'skipped.jsonl'}"
        )
    idx = np.nonzero(valid)[0]
    parts: list[Links] = []
    info: dict[str, Any] = {"warnings": []}
    if "sha256" in methods:
        sl = sha_links([shas[k] for k in idx])
        parts.append(Links(idx[sl.i], idx[sl.j], sl.kind, sl.value))
    if "phash" in methods:
        from glomssl.mining.image_hashes import hamming_pairs

        i, j, d = hamming_pairs(m["hashes"][idx], cfg.phash_threshold, cfg.batch)
        kind = np.full(len(i), PRIORITY["phash"], np.int8)
        parts.append(Links(idx[i], idx[j], kind, d.astype(np.float64)))
    n_emb = 0
    if use_emb:
        if ext_emb is not None:
            sel = np.array([k for k in idx if rows[k]["path"] in ext_paths], np.int64)
            if len(sel) == 0 and len(idx):
                raise GlomsslError(
                    f"no 'path' of {cfg.input} appears in {cfg.embeddings}; embed this manifest"
                )
            order = np.array([ext_paths[rows[k]["path"]] for k in sel], np.int64)
            same = len(order) == len(ext_emb) and bool(np.all(order == np.arange(len(order))))
            emb = ext_emb if same else ext_emb[order]  # no copy when the npz follows the manifest
            del ext_emb
        else:
            sel, emb = idx, m["desc"][idx]
        n_emb = len(sel)
        parts.append(_embedding_links(normalize_rows(emb), sel, cfg, info))
        del emb
    grouped = group_rows(
        n, Links.concat(parts), m["sizes"], np.array([_row_score(r) for r in rows]), cfg.keep
    )
    keeper, reached = grouped["keeper"], grouped["reached"]
    by_emb = sum(1 for k in idx if keeper[k] != k and reached[k][1] == PRIORITY["embedding"])
    too_many = n_emb and by_emb > cfg.max_embedding_drop * n_emb
    if too_many and n_emb >= CALIBRATE_MIN_ROWS and not cfg.force:
        at_most = info["embedding_threshold"] >= 0.999  # no higher --cosine to ask for
        raise GlomsslError(
            f"embedding links would drop {by_emb} of {n_emb} rows ({100 * by_emb / n_emb:.0f}%), "
            f"more than --max-embedding-drop {cfg.max_embedding_drop:g}: at cosine >= "
            f"{info['embedding_threshold']} these embeddings do not tell the images apart; "
            + ("" if at_most else "raise --cosine, ")
            + "use embeddings of a trained encoder (`glomssl embed --checkpoint RUN`), or pass "
            "--force to drop them anyway"
        )
    if too_many and n_emb < CALIBRATE_MIN_ROWS:  # too few rows to refuse on, but said
        info["warnings"].append(
            f"embedding links drop {by_emb} of {n_emb} rows, more than --max-embedding-drop "
            f"{cfg.max_embedding_drop:g}; with under {CALIBRATE_MIN_ROWS} rows that is not "
            "refused: check dropped.jsonl"
        )
    save_config(cfg, out_dir / "dedup.yaml")  # only once the run will write its results

    group_no: dict[int, int] = {}
    kept: list[Row] = []
    dropped: list[Row] = []
    counts = {meth: 0 for meth in methods}
    for k in idx.tolist():
        image, row = pairs[k]
        if keeper[k] == k:
            kept.append(output_row(row, image, out_dir, src_dir, shas[k], m["dims"][k]))
            continue
        via, kind_id, value = reached[k]
        reason = METHODS[kind_id]
        counts[reason] += 1
        rec = dict(row, image=str(image))
        rec.update(
            dup_of=rows[int(keeper[k])]["path"],
            reason=reason,
            via=rows[via]["path"],
            group=group_no.setdefault(int(keeper[k]), len(group_no)),
        )
        if reason == "phash":
            rec["distance"] = int(value)
        elif reason == "embedding":
            rec["similarity"] = round(float(value), 6)
        dropped.append(rec)
    write_manifest(
        out_dir / "manifest.jsonl", kept, validate=False
    )  # input rows, validated on read
    write_jsonl(out_dir / "dropped.jsonl", dropped)
    write_skip_list(out_dir, m["skipped"])
    return {
        "input": n,
        "kept": len(kept),
        "dropped": len(dropped),
        "skipped": len(m["skipped"]),
        "repeats": repeats,
        "rehashed": int(m["stale"].sum()),
        "groups": len(group_no),
        "reasons": counts,
        "embedded": n_emb,
        "embedding_index": info.get("index"),
        "embedding_threshold": info.get("embedding_threshold"),
        "neighbour_cosine": info.get("neighbour_cosine"),
        "warnings": info["warnings"],
        "out": str(out_dir),
    }
