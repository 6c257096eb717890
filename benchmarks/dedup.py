"""Benchmark: de-duplicating 10k, 100k and 1M embeddings (dim 512) with planted near duplicates.

For each size N, in a fresh subprocess (so peak memory is that size's own):
* data: unit vectors around 1000 random centres (so the coarse quantiser has real structure), with
  N/100 planted near-duplicate pairs (a copy plus noise, cosine about 0.97) and N/1000 exact copies;
* ``core``: the threshold calibration (:func:`neighbour_scale`, a 1,000-row sample beyond 1,000
  rows), :func:`glomssl.mining.embedding_search.cosine_pairs` (exact faiss IndexFlatIP search up to
  ``exact_max``, the IVF self-join beyond, with glomssl's defaults) plus union-find grouping
  (:func:`group_rows`): seconds, peak RSS, recall of the planted pairs at the calibrated threshold,
  and reported pairs that were not planted;
* ``e2e`` (up to ``--e2e-max``): the whole ``run_dedup`` on a manifest of N rows with an
  ``--embeddings`` npz (embedding method only: the sha256 method now hashes each file's bytes, and
  these rows have no files): seconds and peak RSS.

Prints ONE JSON line. Usage: python benchmarks/dedup.py [--sizes 10000,100000,1000000] [--e2e-max N]
[--noise 0.008 --cosine 0.95] (recall counts the planted pairs whose cosine reaches the threshold)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DIM = 512


def make_data(
    n: int, noise: float = 0.008, seed: int = 0
) -> tuple[np.ndarray, set[tuple[int, int]]]:
    from glomssl.mining.embedding_search import normalize_rows

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1000, DIM), dtype=np.float32)
    x = np.empty((n, DIM), np.float32)
    for s in range(0, n, 100_000):
        e = min(n, s + 100_000)
        x[s:e] = centres[rng.integers(0, 1000, e - s)]
        x[s:e] += rng.standard_normal((e - s, DIM), dtype=np.float32)
    normalize_rows(x)
    pairs, copies = n // 100, n // 1000
    perm = rng.permutation(n)[: 2 * (pairs + copies)]
    src, dst = perm[:pairs], perm[pairs : 2 * pairs]
    x[dst] = x[src] + noise * rng.standard_normal((pairs, DIM), dtype=np.float32)
    csrc, cdst = perm[2 * pairs : 2 * pairs + copies], perm[2 * pairs + copies :]
    x[cdst] = x[csrc]
    normalize_rows(x)
    truth = {(int(min(a, b)), int(max(a, b))) for a, b in zip(src, dst)}
    truth |= {(int(min(a, b)), int(max(a, b))) for a, b in zip(csrc, cdst)}
    return x, truth


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_one(n: int, e2e: bool, noise: float, cosine: float) -> dict:
    from glomssl.mining.dedup import DedupConfig
    from glomssl.mining.dup_groups import Links, group_rows
    from glomssl.mining.embedding_search import (
        calibrated_threshold,
        cosine_pairs,
        neighbour_scale,
    )

    t0 = time.perf_counter()
    x, truth = make_data(n, noise)
    gen_s = time.perf_counter() - t0
    mem_data = peak_mib()
    cfg = DedupConfig(quiet=True, cosine=cosine)
    t0 = time.perf_counter()
    scale = neighbour_scale(x)  # the calibration run_dedup does before searching
    threshold = calibrated_threshold(cfg.cosine, scale, cfg.nn_ratio)
    scale_s = time.perf_counter() - t0
    # planted pairs that really reach the threshold (all of them at the default noise)
    eligible = {(a, b) for a, b in truth if float(x[a] @ x[b]) >= threshold}
    i, j, sim, info = cosine_pairs(
        x, threshold, cfg.exact_max, cfg.nlist, cfg.nprobe, cfg.batch, quiet=True
    )
    links = Links(i, j, np.full(len(i), 2, np.int8), sim.astype(np.float64))
    g = group_rows(n, links, np.ones(n), np.full(n, np.nan), "largest")
    core_s = time.perf_counter() - t0
    found = set(zip(i.tolist(), j.tolist()))
    out: dict = {
        "n": n,
        "dim": DIM,
        "index": info.get("index"),
        "nlist": info.get("nlist"),
        "nprobe": info.get("nprobe"),
        "generate_s": round(gen_s, 1),
        "core_s": round(core_s, 1),
        "calibration_s": round(scale_s, 1),
        "cosine": cosine,
        "neighbour_cosine": round(1 - scale, 4),
        "threshold": round(threshold, 5),
        "planted_pairs": len(truth),
        "planted_at_or_above_cosine": len(eligible),
        "recall": round(len(eligible & found) / max(1, len(eligible)), 5),
        "unplanted_pairs_reported": len(found - truth),
        "dropped": int((g["keeper"] != np.arange(n)).sum()),
        "data_mib": round(n * DIM * 4 / 2**20),
        "peak_rss_mib_after_data": round(mem_data),
        "peak_rss_mib": round(peak_mib()),
    }
    if e2e:
        from glomssl.manifest import dumps_row
        from glomssl.mining.dedup import run_dedup

        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "panels").mkdir()
            rng = np.random.default_rng(1)
            paths = [f"p{k:07d}.png" for k in range(n)]
            with open(root / "panels" / "manifest.jsonl", "w") as fh:
                for p in paths:
                    row = {"path": p, "sha256": rng.bytes(32).hex(), "width": 256, "height": 256}
                    fh.write(dumps_row(dict(row, license="by", uid=p)) + "\n")
            np.savez(root / "emb.npz", paths=np.array(paths), embeddings=x)
            del x
            t0 = time.perf_counter()
            s = run_dedup(
                DedupConfig(
                    input=str(root / "panels" / "manifest.jsonl"),
                    out=str(root),  # the (absent) images lie inside OUT: nothing is linked
                    embeddings=str(root / "emb.npz"),
                    methods=["embedding"],  # sha256 would hash files; these rows have none
                    cosine=cosine,
                    quiet=True,
                )
            )
            out["e2e_s"] = round(time.perf_counter() - t0, 1)
            out["e2e_dropped"] = s["dropped"]
            out["e2e_peak_rss_mib"] = round(peak_mib())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--e2e-max", type=int, default=100_000)
    ap.add_argument("--noise", type=float, default=0.008, help="per-dimension noise of the copies")
    ap.add_argument("--cosine", type=float, default=0.95, help="dedup threshold")
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--e2e", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one is not None:
        print(json.dumps(run_one(args.one, args.e2e, args.noise, args.cosine)))
        return
    results = []
    for n in [int(s) for s in args.sizes.split(",")]:
        cmd = [sys.executable, __file__, "--one", str(n), "--noise", str(args.noise)]
        cmd += ["--cosine", str(args.cosine)] + (["--e2e"] if n <= args.e2e_max else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
        if proc.returncode != 0:
            results.append({"n": n, "error": proc.stderr.strip().splitlines()[-1:]})
            continue
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(
        json.dumps(
            {"benchmark": "dedup", "machine": "2-core CPU, shared/noisy", "results": results}
        )
    )


if __name__ == "__main__":
    main()
