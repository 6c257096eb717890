"""One encoder-decoder pass for all K classes vs K separate passes (what the GIO2 release does).

The Glo-In-One v2 release segments a patch by running the whole network once per class. glomssl runs
the residual U-Net once and evaluates the K dynamic heads on its features. Both paths compute the same
probabilities (tests/models/test_segmenters.py checks it); this script times them on the same tiles,
as a ratio measured in one run, at K = 2, 5 and 14 (the paper's class count), for the paper-size
network (base width 32, ~8 M parameters). Prints ONE JSON line.

Usage: ``OMP_NUM_THREADS=1 nice python benchmarks/segment_speed.py [--tile 256] [--device cpu]``.
"""

from __future__ import annotations

import argparse
import json
import os
import time


def _time(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--tiles", type=int, default=4, help="tiles per batch")
    ap.add_argument("--base", type=int, default=32)
    ap.add_argument("--ks", default="2,5,14")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    import torch

    from glomssl.models import create_model

    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    dev = a.device
    x = torch.rand(a.tiles, 3, a.tile, a.tile, device=dev)
    rows = []
    for k in [int(v) for v in a.ks.split(",")]:
        torch.manual_seed(0)
        m = create_model("dynamic", classes=[f"c{i}" for i in range(k)], base=a.base).to(dev).eval()

        def one_pass(m: torch.nn.Module = m) -> torch.Tensor:
            with torch.no_grad():
                return m.probabilities(x)  # type: ignore[operator,no-any-return]

        def k_passes(m: torch.nn.Module = m, k: int = k) -> torch.Tensor:
            out = []
            with torch.no_grad():
                for t in range(k):
                    task = torch.full((a.tiles,), t, device=dev)
                    out.append(torch.sigmoid(m.forward_tasks(x, task)))  # type: ignore[operator]
            return torch.stack(out, dim=1)

        one_pass()  # warm-up
        diff = float((one_pass() - k_passes()).abs().max())
        t1 = _time(one_pass, a.repeats)
        tk = _time(k_passes, a.repeats)
        if dev.startswith("cuda"):
            torch.cuda.synchronize()
        rows.append({
            "K": k, "one_pass_s": round(t1, 3), "k_passes_s": round(tk, 3),
            "speedup": round(tk / t1, 2), "tiles_per_s_one_pass": round(a.tiles / t1, 2),
            "max_abs_prob_diff": diff,
        })  # fmt: skip
    params = sum(p.numel() for p in m.parameters())
    print(json.dumps({
        "benchmark": "segment_speed", "device": dev, "threads": torch.get_num_threads(),
        "tile": a.tile, "tiles": a.tiles, "base": a.base, "params_at_K_max": params,
        "results": rows,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
