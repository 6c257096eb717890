"""De-duplication: exact (sha256), perceptual-hash and embedding near-duplicates, grouped by union-find.

Three kinds of links between manifest rows, each optional:

* ``sha256``: identical file bytes (the row's ``sha256``).
* ``phash``: 64-bit DCT perceptual hashes (Zauner, "Implementation and benchmarking of perceptual image
  hash functions", 2010: grey 32x32 -> 2-D DCT-II -> the 8x8 lowest frequencies without the DC row and
  column -> one bit per coefficient above their median) within ``phash_threshold`` bits (Hamming),
  searched exactly with faiss's binary flat index.
* ``embedding``: cosine similarity >= ``cosine`` between image embeddings, either from
  ``--embeddings FILE.npz`` (``glomssl embed``: ``paths``, ``embeddings`` float32 (N, D)) or the
  built-in *tiny-image descriptor* (see :func:`tiny_descriptor`). Up to ``exact_max`` rows the search is
  exact (faiss ``IndexFlatIP`` range search, in query batches); beyond, an approximate inverted-file
  join (:func:`ivf_self_join`) that handles 1,000,000 x 512 on a 2-core, 24 GB machine.

Links are merged into groups (connected components, scipy's union-find on a sparse graph); each group
keeps its largest (or best-scored) row and every other row is recorded in ``dropped.jsonl`` with the
row it was dropped in favour of (``dup_of``), the link that reached it (``reason``, ``via``,
``distance``/``similarity``) and its ``group``.
"""

from __future__ import annotations

import dataclasses
import os
from collections import deque
from pathlib import Path
from typing import Any, Literal

import numpy as np

from glomssl.errors import GlomsslError

METHODS = ("sha256", "phash", "embedding")
_PRIORITY = {m: i for i, m in enumerate(METHODS)}


@dataclasses.dataclass
class DedupConfig:
    """Options of ``glomssl dedup``."""

    input: str = ""
    out: str = ""
    embeddings: str | None = None
    methods: list[str] = dataclasses.field(default_factory=lambda: list(METHODS))
    phash_threshold: int = 6
    cosine: float = 0.95
    exact_max: int = 20_000
    nlist: int = 0
    nprobe: int = 2
    batch: int = 4096
    keep: Literal["largest", "best"] = "largest"
    quiet: bool = False

    def validate(self) -> None:
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise GlomsslError(
                f"--methods {','.join(self.methods)}: choose from {','.join(METHODS)}"
            )
        if not 0 <= self.phash_threshold <= 64:
            raise GlomsslError(f"--phash-threshold {self.phash_threshold} must lie in 0..64 bits")
        if not -1.0 < self.cosine <= 1.0:
            raise GlomsslError(f"--cosine {self.cosine} must lie in (-1, 1]")
        if self.exact_max < 0 or self.nlist < 0 or self.nprobe < 1 or self.batch < 1:
            raise GlomsslError("--exact-max, --nlist must be >= 0 and --nprobe, --batch >= 1")


# ----------------------------------------------------------------------------- image descriptors


def phash(img: Any) -> int:
    """64-bit DCT perceptual hash of a PIL image (Zauner 2010), as a Python int."""
    from PIL import Image
    from scipy.fft import dctn

    grey = np.asarray(img.convert("L").resize((32, 32), Image.Resampling.LANCZOS), np.float64)
    coeffs = dctn(grey, type=2, norm="ortho")[1:9, 1:9]  # (8, 8) lowest frequencies, no DC terms
    bits = (coeffs > np.median(coeffs)).ravel()  # (64,)
    return int(np.packbits(bits.astype(np.uint8)).view(">u8")[0])


def tiny_descriptor(img: Any) -> np.ndarray:
    """Built-in embedding: a 16x16 RGB thumbnail, mean-removed per channel, unit length (768,).

    Cosine similarity of two descriptors is the correlation of their thumbnails, so it survives
    resizing, recompression, mild blur and brightness/colour-cast shifts, and it flags the same
    picture exported twice. Its limits: it knows nothing of content, so it misses crops, flips,
    rotations and re-stained or re-photographed sections (use ``glomssl embed`` features for those),
    and uniform images give a zero vector that matches nothing.
    """
    from PIL import Image

    small = np.asarray(img.convert("RGB").resize((16, 16), Image.Resampling.BOX), np.float32)
    v = (small - small.reshape(-1, 3).mean(axis=0)).ravel()  # (768,)
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-6 else np.zeros_like(v)


# ----------------------------------------------------------------------------- pair search


def _query_ids(lims: np.ndarray) -> np.ndarray:
    """Query number of each result of a faiss range search, from its ``lims`` offsets (Q + 1,)."""
    counts = (lims[1:].astype(np.int64) - lims[:-1].astype(np.int64)).astype(np.int64)
    return np.repeat(np.arange(len(counts), dtype=np.int64), counts)


def hamming_pairs(hashes: np.ndarray, threshold: int, batch: int = 4096) -> tuple[np.ndarray, ...]:
    """All pairs i < j with Hamming(hash_i, hash_j) <= threshold (exact, faiss binary flat index).

    hashes: (N,) uint64. Returns (i, j, distance) int64 arrays.
    """
    import faiss

    n = len(hashes)
    if n < 2:
        e = np.zeros(0, np.int64)
        return e, e, e
    codes = np.ascontiguousarray(hashes.astype(">u8").view(np.uint8).reshape(n, 8))  # (N, 8)
    index = faiss.IndexBinaryFlat(64)
    index.add(codes)
    out_i, out_j, out_d = [], [], []
    for s in range(0, n, batch):
        lims, dist, ids = index.range_search(codes[s : s + batch], threshold + 1)  # d < radius
        q = s + _query_ids(lims)
        keep = ids > q
        out_i.append(q[keep])
        out_j.append(ids[keep].astype(np.int64))
        out_d.append(dist[keep].astype(np.int64))
    return tuple(np.concatenate(a) for a in (out_i, out_j, out_d))


def exact_cosine_pairs(
    emb: np.ndarray, threshold: float, batch: int = 4096, quiet: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs i < j with cosine >= threshold, exactly (faiss IndexFlatIP range search in batches).

    emb: (N, D) float32, rows already unit length. Returns (i, j, similarity).
    """
    import faiss

    from glomssl.mining.curate import progress_iter

    n, d = emb.shape
    index = faiss.IndexFlatIP(d)
    index.add(emb)
    out_i, out_j, out_s = [], [], []
    radius = float(
        np.nextafter(np.float32(threshold), np.float32(-np.inf))
    )  # keeps sim >= threshold
    for s in progress_iter(list(range(0, n, batch)), quiet, "embedding search"):
        lims, sims, ids = index.range_search(emb[s : s + batch], radius)
        q = s + _query_ids(lims)
        keep = ids > q
        out_i.append(q[keep])
        out_j.append(ids[keep].astype(np.int64))
        out_s.append(sims[keep])
    if not out_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_s)


def ivf_self_join(
    emb: np.ndarray,
    threshold: float,
    nlist: int = 0,
    nprobe: int = 2,
    batch: int = 4096,
    seed: int = 0,
    quiet: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Approximate all-pairs cosine join through an inverted file (IVF), for large N.

    1. A coarse quantiser: spherical k-means (faiss) with ``nlist`` centroids (default ~2 sqrt(N)),
       trained on a fixed sample of a 64-dimensional PCA projection (faiss PCAMatrix).
    2. Every vector goes to the inverted lists of its ``nprobe`` nearest centroids (faiss
       IndexFlatIP search on the centroids, batched).
    3. Each list is joined with itself by blocked matrix products in the full dimension (BLAS), so
       every reported similarity is exact; pairs found in several lists are counted once.

    A near-duplicate pair is missed only when the two vectors share none of their ``nprobe`` lists;
    for cosine >= 0.9 that is rare (benchmarks/dedup.py measures recall). Why not faiss's own
    IndexIVFFlat.range_search: it scans the lists once per query without BLAS; on this shared 2-core
    machine 50,000 of 1,000,000 queries (512-d, nlist 1024, nprobe 4) took 72 s, i.e. ~24 min for
    all, against 3 to 5.5 min for this join on the whole set (`BENCHMARKS.md`).
    Memory beyond ``emb``: the projection (N x 64 float32), the list assignment (N x nprobe int64) and
    one (batch x list size) block of similarities.

    emb: (N, D) float32, unit rows. Returns (i, j, similarity, info).
    """
    import faiss

    from glomssl.mining.curate import progress_iter

    n, d = emb.shape
    nlist = nlist or int(min(max(8, 2 * np.sqrt(n)), 8192))
    nlist = max(1, min(nlist, n // 39))  # faiss k-means wants >= 39 points per centroid
    nprobe = min(nprobe, nlist)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(n, 40 * nlist), replace=False))
    if d > 64 and len(sample) >= 256:
        pdim = 64
        pca = faiss.PCAMatrix(d, pdim)
        pca.train(emb[sample])
        low = np.empty((n, pdim), np.float32)  # (N, 64)
        for s in range(0, n, 65536):
            low[s : s + 65536] = pca.apply(emb[s : s + 65536])
    else:  # already small, or too few rows to fit a projection
        pdim, low = d, emb.copy()
    faiss.normalize_L2(low)
    km = faiss.Kmeans(pdim, nlist, niter=12, spherical=True, seed=seed + 1, verbose=False)
    km.train(low[sample])
    quant = faiss.IndexFlatIP(pdim)
    assert km.centroids is not None
    quant.add(km.centroids)
    assign = np.empty((n, nprobe), np.int64)  # (N, nprobe) list ids
    for s in range(0, n, 65536):
        assign[s : s + 65536] = quant.search(low[s : s + 65536], nprobe)[1]
    del low
    flat = assign.ravel()
    order = np.argsort(flat, kind="stable")
    members = order // nprobe  # row ids grouped by list
    bounds = np.searchsorted(flat[order], np.arange(nlist + 1))
    found_i, found_j, found_s = [], [], []
    for c in progress_iter(list(range(nlist)), quiet, "embedding lists"):
        ids = members[bounds[c] : bounds[c + 1]]  # ascending row ids (stable sort)
        if len(ids) < 2:
            continue
        block = emb[ids]  # (M, D)
        step = max(1, min(batch, (1 << 26) // len(ids)))  # similarity block <= 256 MiB
        for s in range(0, len(ids), step):
            sims = block[s : s + step] @ block[s:].T  # (b, M - s)
            qi, qj = np.nonzero(sims >= threshold)
            keep = qj > qi  # upper triangle: column offset s, so j index = s + qj > s + qi
            qi, qj = qi[keep], qj[keep]
            found_i.append(ids[s + qi])
            found_j.append(ids[s + qj])
            found_s.append(sims[qi, qj])
    info = {"index": "ivf", "nlist": nlist, "nprobe": nprobe, "pca_dim": pdim}
    if not found_i:
        e = np.zeros(0, np.int64)
        return e, e, np.zeros(0, np.float32), info
    i, j, sim = np.concatenate(found_i), np.concatenate(found_j), np.concatenate(found_s)
    _, first = np.unique(i * n + j, return_index=True)
    return i[first], j[first], sim[first], info


def cosine_pairs(
    emb: np.ndarray, cfg: DedupConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Exact search up to ``cfg.exact_max`` rows, the IVF join beyond. emb: (N, D) unit float32."""
    if len(emb) < 2:
        e = np.zeros(0, np.int64)
        return e, e, np.zeros(0, np.float32), {"index": "none"}
    if len(emb) <= cfg.exact_max:
        i, j, s = exact_cosine_pairs(emb, cfg.cosine, cfg.batch, cfg.quiet)
        return i, j, s, {"index": "flat"}
    return ivf_self_join(emb, cfg.cosine, cfg.nlist, cfg.nprobe, cfg.batch, quiet=cfg.quiet)


def _npy_header(p: Path, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of array ``name`` inside an npz, read from its header without loading it."""
    import zipfile

    with zipfile.ZipFile(p) as zf, zf.open(f"{name}.npy") as fh:
        major, _ = np.lib.format.read_magic(fh)
        read = (
            np.lib.format.read_array_header_1_0
            if major == 1
            else np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read(fh)
    return tuple(shape), np.dtype(dtype)


def load_embeddings(path: str | os.PathLike[str]) -> tuple[list[str], np.ndarray]:
    """Read ``--embeddings FILE.npz`` (``paths`` strings, ``embeddings`` (N, D)); check memory first.

    Returns the paths and a float32 (N, D) array. The memory check reads the array's header, so a file
    too large for this machine is refused before anything is loaded.
    """
    import zipfile

    import psutil

    p = Path(path)
    if not p.is_file():
        raise GlomsslError(f"embeddings file {p} does not exist; make one with `glomssl embed`")
    try:
        with np.load(p, allow_pickle=False) as npz:
            if "paths" not in npz.files or "embeddings" not in npz.files:
                raise GlomsslError(
                    f"{p} lacks the arrays 'paths' and 'embeddings'; use a file from `glomssl embed`"
                )
            shape, dtype = _npy_header(p, "embeddings")
            n_items = int(np.prod(shape)) if shape else 0
            # the array as stored, its float32 copy when converted, and ~30% working space
            need = int(n_items * (dtype.itemsize + (0 if dtype == np.float32 else 4)) * 1.3)
            free = psutil.virtual_memory().available
            if need > free:
                raise GlomsslError(
                    f"{p}: embeddings {shape} need ~{need >> 20} MiB but {free >> 20} MiB are "
                    "free; free memory or de-duplicate in parts"
                )
            paths = [str(x) for x in npz["paths"].tolist()]
            emb = np.ascontiguousarray(npz["embeddings"], dtype=np.float32)
    except ValueError as exc:
        raise GlomsslError(f"{p} is not a plain npz of strings and numbers ({exc})") from exc
    except (OSError, zipfile.BadZipFile, KeyError) as exc:
        raise GlomsslError(f"{p} is not a readable npz file ({exc})") from exc
    if emb.ndim != 2 or emb.shape[0] != len(paths):
        raise GlomsslError(f"{p}: 'embeddings' must be (N, D) with N = len(paths) = {len(paths)}")
    if len(set(paths)) != len(paths):
        raise GlomsslError(f"{p}: 'paths' holds repeated entries; each image must appear once")
    for s in range(0, len(emb), 65536):
        if not np.all(np.isfinite(emb[s : s + 65536])):
            raise GlomsslError(f"{p}: 'embeddings' holds NaN or infinite values; recompute them")
    return paths, emb


def normalize_rows(emb: np.ndarray) -> np.ndarray:
    """Scale rows to unit length in place (zero rows stay zero). emb: (N, D) float32."""
    for s in range(0, len(emb), 65536):
        blk = emb[s : s + 65536]
        norms = np.linalg.norm(blk, axis=1, keepdims=True)
        np.divide(blk, norms, out=blk, where=norms > 1e-12)
    return emb


# ----------------------------------------------------------------------------- groups and keepers


@dataclasses.dataclass
class Links:
    """Undirected links between rows: endpoints, kind (index into METHODS) and evidence value."""

    i: np.ndarray  # (E,) int64
    j: np.ndarray  # (E,) int64
    kind: np.ndarray  # (E,) int8
    value: np.ndarray  # (E,) float64: Hamming bits for phash, cosine for embedding, 0 for sha256

    @staticmethod
    def concat(parts: list[Links]) -> Links:
        if not parts:
            e = np.zeros(0, np.int64)
            return Links(e, e, np.zeros(0, np.int8), np.zeros(0, np.float64))
        return Links(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in "i j kind value".split())
        )


def sha_links(shas: list[str | None]) -> Links:
    """Star links from every row to the first row with the same sha256."""
    first: dict[str, int] = {}
    ii, jj = [], []
    for k, h in enumerate(shas):
        if not h:
            continue
        if h in first:
            ii.append(first[h])
            jj.append(k)
        else:
            first[h] = k
    i, j = np.asarray(ii, np.int64), np.asarray(jj, np.int64)
    return Links(i, j, np.full(len(i), _PRIORITY["sha256"], np.int8), np.zeros(len(i)))


def group_rows(
    n: int, links: Links, sizes: np.ndarray, scores: np.ndarray, keep: str
) -> dict[str, Any]:
    """Connected components of the link graph (union-find) and each group's keeper.

    sizes: (N,) pixel areas; scores: (N,) quality scores (NaN when unknown). ``keep="largest"`` ranks
    by area, then score; ``"best"`` by score, then area; ties go to the earlier row. Returns ``labels``
    (N,) component ids, ``keeper`` (N,) the kept row of each row's group, and ``reached`` (N, 3): for
    each dropped row, the neighbour that reached it in a breadth-first walk from the keeper over links
    ordered sha256 < phash < embedding, the link kind, and its value.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(links.i), np.int8), (links.i, links.j)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    score = np.where(np.isnan(scores), -np.inf, scores)
    primary, secondary = (sizes, score) if keep == "largest" else (score, sizes)
    # lexsort: last key is primary; row index last tie-break (earlier row wins)
    order = np.lexsort((np.arange(n), -secondary, -primary, labels))
    first_in_group = np.ones(n, bool)
    first_in_group[1:] = labels[order][1:] != labels[order][:-1]
    keeper_of_label = np.empty(labels.max() + 1 if n else 0, np.int64)
    keeper_of_label[labels[order][first_in_group]] = order[first_in_group]
    keeper = keeper_of_label[labels] if n else np.zeros(0, np.int64)
    adj: dict[int, list[tuple[int, int, int, float]]] = {}
    for a, b, k, v in zip(
        links.i.tolist(), links.j.tolist(), links.kind.tolist(), links.value.tolist()
    ):
        adj.setdefault(a, []).append((k, b, a, v))
        adj.setdefault(b, []).append((k, a, b, v))
    reached: dict[int, tuple[int, int, float]] = {}
    for root in sorted({int(keeper[a]) for a in adj}):
        seen = {root}
        queue = deque([root])
        while queue:
            u = queue.popleft()
            for k, w, _, v in sorted(adj.get(u, [])):
                if w not in seen:
                    seen.add(w)
                    reached[w] = (u, k, v)
                    queue.append(w)
    return {"labels": labels, "keeper": keeper, "reached": reached}


def image_keys(image: Path, sha: str | None, cache: Any) -> tuple[float, int, np.ndarray]:
    """(pixel area, pHash, tiny descriptor (768,)) of one image; cached by sha256 so reruns resume."""
    from glomssl.mining.curate import load_rgb

    hit = cache.get("dedup-v1", sha)
    if hit is not None and len(hit) == 16 + 768 * 4:
        area, h = np.frombuffer(hit[:16], dtype="<u8")
        return float(area), int(h), np.frombuffer(hit[16:], dtype="<f4").copy()
    img = load_rgb(image)
    area, h, vec = img.width * img.height, phash(img), tiny_descriptor(img).astype("<f4")
    cache.put("dedup-v1", sha, np.array([area, h], dtype="<u8").tobytes() + vec.tobytes())
    return float(area), h, vec


def _row_score(row: dict[str, Any]) -> float:
    for key in ("curate_score", "score"):
        v = row.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool):
            return float(v)
    return float("nan")


def run_dedup(cfg: DedupConfig) -> dict[str, Any]:
    """De-duplicate a FOLDER or MANIFEST into ``cfg.out``; return a summary dict.

    Writes ``manifest.jsonl`` (kept rows, all fields; images outside OUT hard-linked into
    OUT/images/), ``dropped.jsonl`` (input rows + absolute ``image``, ``dup_of`` and ``via`` as input
    paths, ``reason``, ``distance``/``similarity``, ``group``),
    ``failures.jsonl`` (unreadable images) and ``dedup.yaml``. Deterministic: reruns write the same
    bytes.
    """
    from glomssl.config import save_config
    from glomssl.fsutil import ensure_writable_dir
    from glomssl.manifest import write_jsonl, write_manifest
    from glomssl.mining.curate import (
        FeatureCache,
        check_not_overwriting,
        complete_rows,
        output_row,
        progress_iter,
    )

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
    pairs, src_dir = complete_rows(cfg.input)
    n = len(pairs)
    out_dir = ensure_writable_dir(cfg.out).resolve()
    save_config(cfg, out_dir / "dedup.yaml")

    rows = [r for _, r in pairs]
    valid = np.ones(n, bool)
    failures: list[dict[str, Any]] = []
    sizes = np.array([float(r.get("width", 0)) * float(r.get("height", 0)) for r in rows])
    for k, r in enumerate(rows):
        if "width" not in r:  # a folder file whose header PIL could not read
            failures.append({"path": r["path"], "error": f"{pairs[k][0]} is not a readable image"})
            valid[k] = False
    hashes = np.zeros(n, np.uint64)
    desc = np.zeros((n, 768), np.float32) if use_emb and ext_emb is None else None
    if "phash" in methods or desc is not None:
        with FeatureCache(out_dir / ".dedup-cache.sqlite") as cache:
            for k in progress_iter(list(range(n)), cfg.quiet, "dedup hashes"):
                if not valid[k]:
                    continue
                try:
                    area, hashes[k], vec = image_keys(pairs[k][0], rows[k].get("sha256"), cache)
                except GlomsslError as exc:
                    failures.append(
                        {"path": rows[k].get("path", str(pairs[k][0])), "error": str(exc)}
                    )
                    valid[k] = False
                    continue
                sizes[k] = area
                if desc is not None:
                    desc[k] = vec
    idx = np.nonzero(valid)[0]
    parts: list[Links] = []
    info: dict[str, Any] = {}
    if "sha256" in methods:
        sl = sha_links([rows[k].get("sha256") for k in idx])
        parts.append(Links(idx[sl.i], idx[sl.j], sl.kind, sl.value))
    if "phash" in methods:
        i, j, d = hamming_pairs(hashes[idx], cfg.phash_threshold, cfg.batch)
        kind = np.full(len(i), _PRIORITY["phash"], np.int8)
        parts.append(Links(idx[i], idx[j], kind, d.astype(np.float64)))
    n_emb = 0
    if use_emb:
        if ext_emb is not None:
            sel = np.array([k for k in idx if rows[k]["path"] in ext_paths], np.int64)
            if len(sel) == 0:
                raise GlomsslError(
                    f"no 'path' of {cfg.input} appears in {cfg.embeddings}; embed this manifest"
                )
            order = np.array([ext_paths[rows[k]["path"]] for k in sel], np.int64)
            same = len(order) == len(ext_emb) and bool(np.all(order == np.arange(len(order))))
            emb = ext_emb if same else ext_emb[order]  # no copy when the npz follows the manifest
            del ext_emb
        else:
            assert desc is not None
            sel, emb = idx, desc[idx]
        n_emb = len(sel)
        i, j, s, info = cosine_pairs(normalize_rows(emb), cfg)
        del emb
        kind = np.full(len(i), _PRIORITY["embedding"], np.int8)
        parts.append(Links(sel[i], sel[j], kind, s.astype(np.float64)))
    links = Links.concat(parts)
    scores = np.array([_row_score(r) for r in rows])
    grouped = group_rows(n, links, sizes, scores, cfg.keep)
    keeper, reached = grouped["keeper"], grouped["reached"]

    group_no: dict[int, int] = {}
    kept: list[dict[str, Any]] = []
    dropped: list[dict[str, Any]] = []
    counts = {m: 0 for m in methods}
    for k in range(n):
        if not valid[k]:
            continue
        if keeper[k] == k:
            kept.append(output_row(rows[k], pairs[k][0], out_dir, src_dir))
            continue
        via, kind_id, value = reached[k]
        reason = METHODS[kind_id]
        counts[reason] += 1
        rec = dict(rows[k], image=str(pairs[k][0]))
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
    write_jsonl(out_dir / "failures.jsonl", failures)
    return {
        "input": n,
        "kept": len(kept),
        "dropped": len(dropped),
        "failed": len(failures),
        "groups": len(group_no),
        "reasons": counts,
        "embedded": n_emb,
        "embedding_index": info.get("index"),
        "out": str(out_dir),
    }
