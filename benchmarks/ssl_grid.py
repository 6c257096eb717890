"""Several ssl_realdata attempts at once on one machine (a GPU box), each sized to a time budget.

Each job's cosine schedule should finish inside the budget, so a short concurrent calibration run (40
steps of ``glomssl pretrain`` per job, all at once, as in the real run) measures each job's images/s
first; a job's ``--steps`` is then rate x budget x safety / batch. Jobs that give ``steps`` skip the
calibration; ``{"baseline": true}`` probes the random-init encoder only (``--steps 0``).

    python benchmarks/ssl_grid.py benchmarks/ssl_grid/gpu_session3_b.json --minutes 5.5 --out OUT

SPEC is a JSON list: ``{"name", "method", "sets": {PretrainConfig key: value}, "workers", "steps"?,
"baseline"?}``; ``batch_size`` defaults to 256 and ``image_size`` to 64. Results are appended to
``OUT/results.jsonl`` (one ssl_realdata line per job); ``OUT/metrics_all.jsonl`` keeps a thinned
loss/lr/emb_std trajectory of every run and ``OUT/joblogs.txt`` the tail of each job's output.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CALIBRATION_STEPS = 40


def _sets_args(sets: dict[str, Any]) -> list[str]:
    hardware = ("accelerator", "devices", "num_nodes", "strategy", "precision")
    keys = {k: (f"hardware.{k}" if k in hardware else k) for k in sets}
    return [a for k, v in sets.items() for a in ("--set", f"{keys[k]}={v}")]


def calibrate(jobs: list[dict[str, Any]], data: Path, work: Path) -> dict[str, float | None]:
    """images/s of each job while all of them run together (median of the logged intervals)."""
    procs = []
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    for j in jobs:
        run = work / "calib" / j["name"]
        cfg = work / "calib" / f"{j['name']}.yaml"
        cfg.parent.mkdir(parents=True, exist_ok=True)
        cfg.write_text("log_every: 5\nckpt_every: 100000\ncache: true\nquiet: true\n")
        s = j.get("sets", {})
        cmd = [
            sys.executable, "-m", "glomssl", "pretrain", "--method", j["method"],
            "--data", str(data), "--out", str(run), "--max-steps", str(CALIBRATION_STEPS),
            "--config", str(cfg), "--workers", str(j.get("workers", 3)),
            "--image-size", str(s.get("image_size", 64)),
            "--batch-size", str(s.get("batch_size", 256)),
        ]  # fmt: skip
        if "precision" in s:
            cmd += ["--precision", str(s["precision"])]
        p = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        procs.append((j, run, p))
    rates: dict[str, float | None] = {}
    for j, run, p in procs:
        txt, _ = p.communicate()
        m = run / "metrics.jsonl"
        rows = (
            [json.loads(x) for x in m.read_text().splitlines() if x.strip()] if m.is_file() else []
        )
        r = [x["images_per_s"] for x in rows[2:] if x.get("images_per_s")]  # skip start-up
        rates[j["name"]] = statistics.median(r) if r else None
        if not r:
            print(f"calibration of {j['name']} failed:\n{txt[-3000:]}", flush=True)
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec", help="JSON list of jobs")
    ap.add_argument("--minutes", type=float, required=True, help="training budget of each job")
    ap.add_argument("--out", required=True, help="folder for results.jsonl and logs")
    ap.add_argument("--work", default="/tmp/glomssl_ssl_grid")
    ap.add_argument("--safety", type=float, default=0.9, help="fraction of the budget to plan for")
    args = ap.parse_args()
    jobs: list[dict[str, Any]] = json.loads(Path(args.spec).read_text())
    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    env_data = os.environ.get("GLOMSSL_SHARED_DATA")
    shared = Path(env_data) if env_data else ROOT.parent / "shared" / "data"
    data = shared / "glomeruli" / "images"
    t0 = time.time()
    to_calibrate = [j for j in jobs if not j.get("baseline") and "steps" not in j]
    rates = calibrate(to_calibrate, data, work) if to_calibrate else {}
    print(f"calibration {json.dumps(rates)} {time.time() - t0:.0f}s", flush=True)
    (out / "calib.json").write_text(json.dumps(rates))
    procs = []
    for j in jobs:
        s = dict(j.get("sets", {}))
        s.setdefault("batch_size", 256)
        s.setdefault("image_size", 64)
        s["workers"] = j.get("workers", 3)
        if j.get("baseline"):
            steps = 0
        else:
            if "steps" in j:
                steps = int(j["steps"])
            else:
                rate = rates.get(j["name"])
                if not rate:
                    continue
                steps = int(rate * args.minutes * 60 * args.safety / s["batch_size"])
            s["max_minutes"] = args.minutes * 1.15  # a cap only; the schedule is sized to fit
        cmd = [
            sys.executable, str(ROOT / "benchmarks" / "ssl_realdata.py"), "--name", j["name"],
            "--method", j.get("method", "vicreg"), "--steps", str(steps), "--work", str(work),
            "--log", str(out / "results.jsonl"), "--skip-baseline", *_sets_args(s),
        ]  # fmt: skip
        if j.get("layers"):
            cmd += ["--layers", str(j["layers"])]
        log = open(work / f"{j['name']}.log", "w")  # noqa: SIM115 - closed after the job ends
        print(f"launch {j['name']}: {steps} steps", flush=True)
        procs.append((j, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log))
    for j, p, log in procs:
        p.wait()
        log.close()
        print(f"done {j['name']} rc {p.returncode} {time.time() - t0:.0f}s", flush=True)
    with open(out / "joblogs.txt", "w") as fh:
        for j in jobs:
            f = work / f"{j['name']}.log"
            if f.is_file():
                fh.write(f"==== {j['name']}\n{f.read_text()[-4000:]}\n")
    with open(out / "metrics_all.jsonl", "w") as fh:
        for j in jobs:
            m = work / j["name"] / "ssl" / "metrics.jsonl"
            if m.is_file():
                rows = m.read_text().splitlines()
                for r in rows[:: max(1, len(rows) // 40)] + rows[-1:]:
                    fh.write(json.dumps({"name": j["name"], **json.loads(r)}) + "\n")


if __name__ == "__main__":
    main()
