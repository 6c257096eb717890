"""Near-duplicate search over embeddings: exact or inverted-file cosine joins, and calibration.

* :func:`exact_cosine_pairs`: every pair at cosine >= threshold (faiss ``IndexFlatIP`` range search,
  in query batches), for up to ``exact_max`` rows.
* :func:`ivf_self_join`: an approximate inverted-file join that handles 1,000,000 x 512 on a 2-core,
  24 GB machine (every reported similarity is exact; a pair is missed only when its rows share no
  probed list).
* :func:`neighbour_scale` and :func:`calibrated_threshold`: a fixed cosine means different things in
  different embeddings. A random-init encoder maps all glomerulus crops into a narrow cone (median
  nearest-neighbour cosine 0.988 on the 676 real crops), where cosine 0.95 links every crop to every
  other and dropped 675 of 676. Only pairs far closer than the embedding's typical neighbours are
  duplicates: the threshold is raised to ``1 - ratio * d3``, ``d3`` being the median distance
  (1 - cosine) from a row to its 3rd-nearest neighbour (the 3rd, so that rows with one or two copies
  do not shrink the scale), and never lowered below the user's cosine.
* :func:`load_embeddings`: the ``--embeddings`` npz of ``glomssl embed``, memory-checked first.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from glomssl.errors import GlomsslError
from glomssl.mining.image_hashes import range_query_ids

#: Rows needed before the threshold is calibrated (fewer rows give no stable neighbour scale).
CALIBRATE_MIN_ROWS = 20
#: The neighbour rank whose median distance is the embedding's scale.
SCALE_RANK = 3


def exact_cosine_pairs(
    emb: np.ndarray, threshold: float, batch: int = 4096, quiet: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs i < j with cosine >= threshold, exactly (faiss IndexFlatIP range search in batches).

    emb: (N, D) float32, rows already unit length. Returns (i, j, similarity).
    """
    import faiss

    from glomssl.mining.folder_stage import progress_iter

    n, d = emb.shape
    index = faiss.IndexFlatIP(d)
    index.add(emb)
    out_i, out_j, out_s = [], [], []
    radius = float(
        np.nextafter(np.float32(threshold), np.float32(-np.inf))
    )  # keeps sim >= threshold
    for s in progress_iter(list(range(0, n, batch)), quiet, "embedding search"):
        lims, sims, ids = index.range_search(emb[s : s + batch], radius)
        q = s + range_query_ids(lims)
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

    from glomssl.mining.folder_stage import progress_iter

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
    emb: np.ndarray,
    threshold: float,
    exact_max: int = 20_000,
    nlist: int = 0,
    nprobe: int = 2,
    batch: int = 4096,
    quiet: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Exact search up to ``exact_max`` rows, the IVF join beyond. emb: (N, D) unit float32."""
    if len(emb) < 2:
        e = np.zeros(0, np.int64)
        return e, e, np.zeros(0, np.float32), {"index": "none"}
    if len(emb) <= exact_max:
        i, j, s = exact_cosine_pairs(emb, threshold, batch, quiet)
        return i, j, s, {"index": "flat"}
    return ivf_self_join(emb, threshold, nlist, nprobe, batch, quiet=quiet)


def neighbour_scale(
    emb: np.ndarray, rank: int = SCALE_RANK, max_queries: int = 1000, seed: int = 0
) -> float:
    """Median distance (1 - cosine) from a row to its ``rank``-th nearest other row.

    Exact for up to ``max_queries`` rows; beyond, over a fixed random sample of that many query rows
    (each searched against all rows, by blocks of matrix products). emb: (N, D) unit float32.
    Returns NaN when there are not more than ``rank`` rows.
    """
    n = len(emb)
    if n <= rank:
        return float("nan")
    if n <= max_queries:
        q = np.arange(n)
    else:
        q = np.sort(np.random.default_rng(seed).choice(n, size=max_queries, replace=False))
    queries = emb[q]  # (M, D)
    best = np.full((len(q), rank), -np.inf, np.float32)  # the `rank` largest similarities so far
    block = 8192
    for s in range(0, n, block):
        sims = queries @ emb[s : s + block].T  # (M, b)
        inside = (q >= s) & (q < s + block)
        sims[np.nonzero(inside)[0], q[inside] - s] = -np.inf  # a row is not its own neighbour
        both = np.concatenate([best, sims], axis=1)
        best = -np.partition(-both, rank - 1, axis=1)[:, :rank]
    kth = best.min(axis=1)  # (M,) the rank-th largest similarity of each query
    return float(np.median(1.0 - kth.astype(np.float64)))


def calibrated_threshold(cosine: float, scale: float, ratio: float) -> float:
    """``max(cosine, 1 - ratio * scale)``: pairs must be ``1/ratio`` times closer than the scale."""
    if ratio <= 0 or not np.isfinite(scale):
        return cosine
    return max(cosine, 1.0 - ratio * scale)


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
    if p.is_dir():
        raise GlomsslError(
            f"--embeddings {p} is a folder; pass the .npz that `glomssl embed` wrote"
        )
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
    except ValueError as exc:  # numpy's text would advise loading pickles: not repeated here
        raise GlomsslError(
            f"{p} is not an .npz of embeddings (plain strings and numbers); use the file that "
            "`glomssl embed` wrote"
        ) from exc
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:  # EOFError: an empty file
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
