"""Peak RSS of `glomssl datagan generate` (banded) vs datasetGAN's whole-image feature tensor.

For each resolution a default-width ("auto", the ADA paper's default) StyleGAN2 generator and a K=10
labeler (128/32 hidden, the datasetGAN widths) are initialised randomly and saved as a snapshot and a
labeler folder (random weights cost exactly the same memory and time as trained ones). Then, each in
its own fresh subprocess so peaks do not mix:

* ``banded``: the real ``datagan generate`` command (one image; label map at full resolution), peak
  RSS = the child's own VmHWM from /proc/self/status (not getrusage: on Linux ru_maxrss keeps the
  parent's high-water mark across fork/exec, which polluted a first version of this script);
* ``naive``: the same image labelled the datasetGAN way (every layer upsampled to (C_total, H, W) and
  classified at once) where it fits in this machine's memory; its size is always reported too.

Prints ONE JSON line. Usage: ``nice python benchmarks/datagan_memory.py [--res 256 512 1024]
[--naive-max-gb 8]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Every child script starts with this: imports and its own peak-RSS reader.
_CHILD_HEAD = r"""
import json, sys, time
def hwm():  # this process's own peak RSS (VmHWM); getrusage's ru_maxrss would include the
    # parent's high-water mark inherited through fork/exec on Linux
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
"""

CHILD_BANDED = (
    _CHILD_HEAD
    + r"""
from glomssl.cli.datagan import datagan
t = time.time()
try:
    datagan.main(sys.argv[1:], standalone_mode=False)
finally:
    peak = hwm()
    print("RESULT " + json.dumps({"peak_rss_bytes": peak, "seconds": time.time() - t}))
"""
)

CHILD_NAIVE = (
    _CHILD_HEAD
    + r"""
import torch
from glomssl.datagan.features import full_features, load_network, synthesize
from glomssl.datagan.factory import seed_latent
from glomssl.datagan.labeler import load_labeler
t = time.time()
G = load_network(sys.argv[1])
lab, _ = load_labeler(sys.argv[2])
_img, feats = synthesize(G, seed_latent(G, 0, 0.7))
res = int(G.img_resolution)
with torch.no_grad():
    full = full_features(feats, (res, res))  # (C_total, H, W): the datasetGAN tensor
    x = full.permute(1, 2, 0).reshape(res * res, -1)  # (H*W, C_total) pixel rows
    mean, js = lab.predict(x)
peak = hwm()
print("RESULT " + json.dumps({"peak_rss_bytes": peak, "seconds": time.time() - t}))
"""
)


CHILD_SYNTH = (
    _CHILD_HEAD
    + r"""
from glomssl.datagan.features import load_network, synthesize
from glomssl.datagan.factory import seed_latent
t = time.time()
G = load_network(sys.argv[1])
load_peak = hwm()
_img, feats = synthesize(G, seed_latent(G, 0, 0.7))
peak = hwm()
out = {"peak_rss_bytes": peak, "load_peak_rss_bytes": load_peak, "seconds": time.time() - t}
print("RESULT " + json.dumps(out))
"""
)


def _hwm_bytes(pid: int) -> int:
    """The kernel's exact peak-RSS high-water mark (VmHWM) of a live process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _child(code: str, args: list[str], stop_after_s: float | None = None) -> dict[str, Any]:
    """Run a child; its peak RSS comes from its own VmHWM, or, when it is stopped early (after
    ``stop_after_s`` seconds *and* 120 s without any growth of its high-water mark), from VmHWM."""
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    t0 = time.time()
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    hwm, last_growth = 0, time.time()
    while proc.poll() is None:
        try:
            cur = _hwm_bytes(proc.pid)
        except (OSError, ValueError):
            cur = hwm
        if cur > hwm:
            hwm, last_growth = cur, time.time()
        if (
            stop_after_s is not None
            and time.time() - t0 > stop_after_s
            and time.time() - last_growth > 120
        ):
            proc.kill()
            proc.wait()
            return {
                "peak_rss_bytes": hwm,
                "seconds": time.time() - t0,
                "partial": True,
                "seconds_to_peak": last_growth - t0,
            }
        time.sleep(0.25)
    stdout, stderr = proc.communicate()
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            out: dict[str, Any] = json.loads(line[7:])
            out["partial"] = False
            out["seconds_to_peak"] = last_growth - t0  # from polling VmHWM every 0.25 s
            return out
    raise RuntimeError(f"child failed ({proc.returncode}): {stderr[-2000:]}")


def _prepare(root: Path, res: int) -> tuple[Path, Path, int]:
    import copy

    import torch

    from glomssl.datagan.features import feature_channels, synthesize
    from glomssl.datagan.labeler import make_labeler, save_labeler
    from glomssl.datagan.networks import create_discriminator, create_generator
    from glomssl.datagan.snapshot import save_snapshot

    torch.manual_seed(0)
    G = create_generator("auto", res).eval()
    D = create_discriminator("auto", res)
    run = root / f"run{res}"
    save_snapshot(run / "snapshot-000000.safetensors", G, D, copy.deepcopy(G), 0.0, 0)
    with torch.no_grad():
        _img, feats = synthesize(G, G.mapping(torch.randn(1, G.z_dim)))
    channels = feature_channels(feats)
    del feats, D
    lab = make_labeler(sum(channels), 3, k=10, hidden=[128, 32]).eval()
    save_labeler(lab, root / f"lab{res}", {"channels": channels, "resolution": res})
    return run, root / f"lab{res}", sum(channels)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--res", type=int, nargs="+", default=[256, 512, 1024])
    ap.add_argument("--naive-max-gb", type=float, default=8.0, help="skip naive runs above this")
    ap.add_argument("--band-mb", type=int, default=256)
    ap.add_argument(
        "--full-max-res",
        type=int,
        default=512,
        help="above this resolution stop the banded run once its peak has been flat for 120 s "
        "(after --partial-after-s); every band reuses one buffer, so the peak is reached early",
    )
    ap.add_argument("--partial-after-s", type=float, default=600.0)
    ap.add_argument(
        "--synth-only",
        action="store_true",
        help="only measure loading + synthesis (the generator's own peak, no labelling)",
    )
    a = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="datagan-mem-") as tmp:
        root = Path(tmp)
        for res in a.res:
            run, lab, c_total = _prepare(root, res)
            naive_tensor = c_total * res * res * 4
            row: dict[str, object] = {
                "resolution": res,
                "c_total": c_total,
                "naive_feature_tensor_gb": round(naive_tensor / 1e9, 2),
            }
            synth = _child(CHILD_SYNTH, [str(run)])
            row["load_only_peak_rss_gb"] = round(synth["load_peak_rss_bytes"] / 1e9, 2)
            row["load_and_synthesis_peak_rss_gb"] = round(synth["peak_rss_bytes"] / 1e9, 2)
            row["synthesis_seconds"] = round(synth["seconds"], 1)
            if a.synth_only:
                results.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
                continue
            t = time.time()
            banded = _child(
                CHILD_BANDED,
                ["generate", "--network", str(run), "--labeler", str(lab), "--n", "1"]
                + ["--out", str(root / f"syn{res}"), "--device", "cpu", "--quiet"]
                + ["--band-mb", str(a.band_mb)],
                stop_after_s=a.partial_after_s if res > a.full_max_res else None,
            )
            row["banded_run"] = "stopped early (peak flat)" if banded["partial"] else "complete"
            row["banded_peak_rss_gb"] = round(banded["peak_rss_bytes"] / 1e9, 2)
            key = (
                "banded_seconds_until_stopped" if banded["partial"] else "banded_seconds_per_image"
            )
            row[key] = round(banded["seconds"], 1)
            row["banded_seconds_to_peak"] = round(banded["seconds_to_peak"], 1)
            row["banded_wall_seconds_incl_startup"] = round(time.time() - t, 1)
            # naive needs the tensor twice (C,H,W and its pixel-major copy) plus activations
            if 2.2 * naive_tensor / 1e9 <= a.naive_max_gb:
                naive = _child(CHILD_NAIVE, [str(run), str(lab)])
                row["naive_peak_rss_gb"] = round(naive["peak_rss_bytes"] / 1e9, 2)
                row["naive_seconds"] = round(naive["seconds"], 1)
            else:
                row["naive_peak_rss_gb"] = None
                row["naive_skipped"] = f"needs > {2 * naive_tensor / 1e9:.1f} GB; not run"
            results.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    print(
        json.dumps(
            {
                "benchmark": "datagan_memory",
                "machine": "2-core CPU, shared/noisy",
                "network": "auto (default width), K=10 labeler 128/32, 3 classes",
                "band_mb": a.band_mb,
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    main()
