"""Mining throughput: figures per second against the local Open-i replay server.

The replay server runs in its own process (``glomssl replay``) with 50 ms latency per request, like a
slow remote API; the miner runs with no rate cap (``--rate 0``) and 1, 4 and 16 download workers. The
claim checked: concurrency pays, 16 workers reach at least 8x the throughput of one.
Prints one JSON line.

    python benchmarks/mine_throughput.py [--figures 160] [--latency 0.05]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from glomssl.mining.pipeline import MineConfig, run_mine
from glomssl.mining.replay import make_synthetic_replay


def start_server(folder: Path, latency: float) -> tuple[subprocess.Popen[str], str]:
    cmd = [
        sys.executable,
        "-m",
        "glomssl",
        "replay",
        "--data",
        str(folder),
        "--port",
        "0",
        "--latency",
        str(latency),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "Open-i replay of ... at http://127.0.0.1:PORT"
    url = line.strip().rsplit(" at ", 1)[-1]
    if not url.startswith("http://127.0.0.1:"):
        proc.kill()
        raise SystemExit(f"replay server did not start: {line!r}")
    return proc, url


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--figures", type=int, default=160)
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--workers", default="1,4,16")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="glomssl-bench-") as tmp:
        folder = make_synthetic_replay(Path(tmp) / "replay", args.figures, size=128)
        proc, url = start_server(folder, args.latency)
        results = {}
        try:
            for w in (int(x) for x in args.workers.split(",")):
                out = Path(tmp) / f"out{w}"
                cfg = MineConfig(
                    query="glomerulus",
                    out=str(out),
                    endpoint=url,
                    rate=0.0,
                    workers=w,
                    page_size=100,
                    quiet=True,
                )
                cfg.validate()
                # search first (same for every worker count), then time the download stage alone
                run_mine(MineConfig(**{**cfg.__dict__, "stop_after": "search"}))
                t0 = time.perf_counter()
                summary = run_mine(cfg)
                dt = time.perf_counter() - t0
                assert summary.done == args.figures, summary.paragraph()
                results[w] = {"seconds": round(dt, 3), "figures_per_s": round(args.figures / dt, 2)}
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    one = results.get(1, {}).get("figures_per_s")
    speedups = {
        f"speedup_{w}": round(r["figures_per_s"] / one, 2) for w, r in results.items() if one
    }
    print(
        json.dumps(
            {
                "benchmark": "mine_throughput",
                "figures": args.figures,
                "latency_s": args.latency,
                "rate_cap": None,
                "workers": {str(w): r for w, r in results.items()},
                **speedups,
                "machine": f"{platform.machine()} {os.cpu_count()} CPUs, shared/noisy",
            }
        )
    )


if __name__ == "__main__":
    main()
