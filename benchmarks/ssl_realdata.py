"""Real-data evidence: does self-supervised pretraining beat the random-init encoder on GS vs nonGS?

Pretrains on the unlabelled crops of ../shared/data/glomeruli (the folder of images only: labels are
never read during pretraining) through ``run_pretrain`` (the same code as ``glomssl pretrain``), exports
the random-init baseline with ``max_steps=0`` and the same seed, embeds both with ``run_embed`` and
probes both with ``run_probe`` (slide-grouped stratified 5-fold x 3 repeats; C of the logistic
regression picked by an inner grouped CV on the training folds only), at 10% and 100% of the labels.

Usage (the first line is the default recipe, as measured on a GPU in session 3)::

    python benchmarks/ssl_realdata.py --name V64 --steps 769 --set workers=3
    python benchmarks/ssl_realdata.py --name A1 --method simsiam --steps 150 --set batch_size=64

``--set key=value`` overrides a PretrainConfig field (``augment.stain_jitter=0.05`` for augmentations).
Prints one JSON line; ``--log FILE`` also appends it to a JSONL file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def shared_data() -> Path:
    env = os.environ.get("GLOMSSL_SHARED_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


def probe_encoder(
    run: Path, images: Path, labels: Path, size: int, layers: list[int], work: Path, tag: str
) -> dict[str, Any]:
    """Embed every crop with the run's encoder and probe GS vs nonGS; returns the probe report."""
    import torch

    from glomssl.ssl.embed import EmbedConfig, run_embed
    from glomssl.ssl.probe import ProbeConfig, run_probe

    npz = work / f"{tag}.npz"
    run_embed(
        EmbedConfig(
            checkpoint=str(run),
            input=str(images),
            out=str(npz),
            image_size=size,
            batch_size=64,
            workers=0,
            device="cuda" if torch.cuda.is_available() else "cpu",
            layers=layers,
            quiet=True,
        )
    )
    return run_probe(
        ProbeConfig(
            embeddings=str(npz),
            labels=str(labels),
            group="slide",
            label_fractions=[0.1, 1.0],
            folds=5,
            repeats=3,
            seed=0,
        )
    )


def bn_recalibrated_random(src: Path, dst: Path, images: Path, size: int) -> None:
    """Control: the random-init trunk with BatchNorm statistics re-estimated on the unlabelled crops.

    Training changes BN running statistics as a side effect; this control separates that (label-free,
    learning-free) effect from what the SSL objective actually learns.
    """
    import torch

    from glomssl.manifest import list_images
    from glomssl.models.backbones import IMAGENET_MEAN, IMAGENET_STD, create_backbone
    from glomssl.runs import load_weights, save_weights
    from glomssl.ssl.data import load_rgb_tensor
    from glomssl.ssl.transforms import eval_transform

    tensors, meta = load_weights(src / "backbone.safetensors")
    trunk = create_backbone(meta["arch"])
    trunk.load_trunk_state_dict(tensors)
    for m in trunk.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over all batches
    tf = eval_transform(size)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    files = list_images(images)
    trunk.train()
    with torch.no_grad():
        for i in range(0, len(files), 64):
            x = torch.stack([tf(load_rgb_tensor(f).float() / 255) for f in files[i : i + 64]])
            trunk((x - mean) / std)
    save_weights(
        dst / "backbone.safetensors", trunk.trunk_state_dict(), {**meta, "method": "random+bn"}
    )


def summarise(report: dict[str, Any]) -> dict[str, float]:
    return {k: round(v["balanced_accuracy"], 4) for k, v in report["results"].items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", required=True)
    ap.add_argument("--method", default="vicreg")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--set", action="append", default=[], help="PretrainConfig override key=value")
    ap.add_argument("--layers", default="4", help="stages pooled for the probe, e.g. 3,4")
    ap.add_argument("--embed-size", type=int, default=None, help="embed at N px [training size]")
    ap.add_argument("--work", default="/tmp/glomssl_ssl_realdata")
    ap.add_argument("--log", default=None)
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="probe an existing run (e.g. other --layers), no training",
    )
    args = ap.parse_args()

    from glomssl.config import build_config, parse_sets
    from glomssl.ssl.train import PretrainConfig, run_pretrain

    data = shared_data() / "glomeruli"
    images, labels = data / "images", data / "labels.csv"
    work = Path(args.work) / args.name
    work.mkdir(parents=True, exist_ok=True)
    over = {"workers": 1, "cache": True, "quiet": True, "log_every": 10, "ckpt_every": 10_000}
    over.update(method=args.method, data=[str(images)], out=str(work / "ssl"), max_steps=args.steps)
    cfg = build_config(PretrainConfig, overrides=over, sets=parse_sets(args.set))
    layers = [int(x) for x in args.layers.split(",")]
    esize = args.embed_size or cfg.image_size
    t0 = time.perf_counter()
    if not (args.reuse and (work / "ssl" / "backbone.safetensors").is_file()):
        run_pretrain(cfg)
    t_train = time.perf_counter() - t0
    from glomssl.runs import read_metrics

    metrics = read_metrics(work / "ssl" / "metrics.jsonl")
    ssl = probe_encoder(work / "ssl", images, labels, esize, layers, work, "ssl")
    if args.reuse:
        t_train = float("nan")  # not retrained here; see the original attempt's line
    result: dict[str, Any] = {
        "name": args.name,
        "method": args.method,
        "steps": args.steps,
        "overrides": parse_sets(args.set),
        "layers": layers,
        "embed_size": esize,
        "train_s": round(t_train, 1),
        "steps_done": json.loads((work / "ssl" / "backbone.json").read_text())["step"],
        "final_loss": metrics[-1]["loss"] if metrics else None,
        "final_emb_std": metrics[-1]["emb_std"] if metrics else None,
        "ssl": summarise(ssl),
    }
    if not args.skip_baseline:
        # the random-init baseline depends only on (arch, seed, image size, layers): cache its probe
        key = f"random-{cfg.arch}-s{cfg.seed}-{esize}px-l{'_'.join(map(str, layers))}"
        cache = {tag: Path(args.work) / f"{key}-{tag}.json" for tag in ("random", "random_bn")}
        if not all(c.is_file() for c in cache.values()):
            base = work / "random"
            run_pretrain(
                build_config(PretrainConfig, overrides={**over, "out": str(base), "max_steps": 0})
            )
            bn_recalibrated_random(base, work / "random_bn", images, esize)
            for tag in cache:
                rep = probe_encoder(work / tag, images, labels, esize, layers, work, tag)
                cache[tag].write_text(json.dumps(rep))
        for tag, c in cache.items():
            result[tag] = summarise(json.loads(c.read_text()))
        result["gain"] = {
            k: round(result["ssl"][k] - result["random"][k], 4) for k in result["ssl"]
        }
    line = json.dumps(result)
    print(line)
    if args.log:
        with open(args.log, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")


if __name__ == "__main__":
    main()
