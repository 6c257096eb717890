"""Picture fingerprints for de-duplication: a DCT perceptual hash and a tiny-image descriptor.

* :func:`phash`: 64-bit DCT perceptual hash (Zauner, "Implementation and benchmarking of perceptual
  image hash functions", 2010: grey 32x32 -> 2-D DCT-II -> the 8x8 lowest frequencies without the DC
  row and column -> one bit per coefficient above their median); near copies are pairs within a few
  bits (Hamming), found exactly by :func:`hamming_pairs` (faiss binary flat index).
* :func:`tiny_descriptor`: the built-in embedding when no ``--embeddings`` file is given.
"""

from __future__ import annotations

from typing import Any

import numpy as np


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


def range_query_ids(lims: np.ndarray) -> np.ndarray:
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
        q = s + range_query_ids(lims)
        keep = ids > q
        out_i.append(q[keep])
        out_j.append(ids[keep].astype(np.int64))
        out_d.append(dist[keep].astype(np.int64))
    return tuple(np.concatenate(a) for a in (out_i, out_j, out_d))
