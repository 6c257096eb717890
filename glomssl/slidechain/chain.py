"""``glomssl wsi``: slides in, glomeruli out -- a resumable queue over one or many slides.

Glo-In-One's promise is "one line of command" from a kidney whole-slide image to detected, classified
and segmented glomeruli viewable in ImageScope. This module runs that chain on the CPU or GPUs with
models glomssl trained itself:

1. the output folder is checked: a new folder, or one holding *this* run (same fingerprint) which is
   resumed; a folder with another run's results or unrelated files is refused;
2. slides (files, or folders of them) are queued in ``OUT/.glomssl-wsi/queue.sqlite`` (one file per
   ``--shard i/n``: nodes never share state), each with a unique output name;
3. one worker per device (``--devices N``) claims slides one at a time and runs
   :func:`glomssl.slidechain.process.process_slide`; a slide that cannot be processed (unreadable,
   truncated, no tissue, no resolution) is recorded as skipped with a one-line reason, and the others
   go on;
4. ``OUT/run_summary.json`` lists every slide with its status, counts or reason. When every given
   slide was skipped the command fails with the first reason (exit code 2).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glomssl.config import opt
from glomssl.errors import GlomsslError

STATE_DIR = ".glomssl-wsi"


@dataclass
class WsiConfig:
    """Options of ``glomssl wsi`` (and, with crops and models off, of ``glomssl detect``)."""

    slides: list[str] = field(default_factory=list)
    out: str = ""
    detector: str | None = None  # detector weights (.safetensors) [shipped]
    classifier: str | None = None  # `glomssl finetune cls` run
    segmenter: str | None = None  # `glomssl finetune seg` run
    segment_class: str | None = None  # the segmenter's class to draw [its first]
    mpp: float | None = opt(None, gt=0, le=64)  # working um/px [the detector's]
    level: int | None = opt(None, ge=0)  # or a pyramid level as is
    slide_mpp: float | None = opt(None, gt=0, le=64)  # the slides' own um/px when missing
    tile: int = opt(1024, ge=64, le=8192)
    overlap: int = opt(256, ge=0)
    conf: float | None = opt(None, gt=0, lt=1)  # score threshold [the detector's]
    nms_iou: float = opt(0.35, gt=0, le=1)  # circle IoU for merging across seams
    crops: bool = True
    crop_um: float = opt(320.0, gt=0, le=10000)  # crop side in microns
    crop_px: int = opt(320, ge=16, le=4096)  # crop side in pixels
    view_context: float = opt(1.0, ge=0.5, le=4)  # models' view: glomerulus diameters
    batch: int = opt(1, ge=1, le=256)  # tiles per forward pass
    device: str = "auto"
    devices: int = opt(1, ge=1, le=64)  # worker processes, one per device
    shard: str | None = None  # "i/n": this node's share of the slides
    quiet: bool = False

    def validate(self) -> None:
        if not self.slides:
            raise GlomsslError("no slides given; pass slide files (or folders of them)")
        if not self.out:
            raise GlomsslError("--out is required: the folder for the results")
        if self.mpp is not None and self.level is not None:
            raise GlomsslError("--mpp and --level both given; choose one working resolution")
        if self.overlap >= self.tile // 2:
            raise GlomsslError(
                f"--overlap {self.overlap} must be less than half --tile {self.tile}"
            )
        if self.tile % 32:
            raise GlomsslError(
                f"--tile must be a multiple of 32 (the detector's stride), got {self.tile}"
            )
        if self.shard is not None:
            parse_shard(self.shard)


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 0 <= i < n."""
    a, sep, b = text.partition("/")
    try:
        i, n = int(a), int(b)
    except ValueError:
        i, n = -1, 0
    if not sep or n < 1 or not 0 <= i < n:
        raise GlomsslError(f"--shard {text!r} must be i/n with 0 <= i < n, e.g. --shard 0/4")
    return i, n


def expand_slides(items: list[str]) -> list[Path]:
    """Slide files, with folders replaced by the slides and large images inside them (sorted)."""
    from glomssl.wsi import IMAGE_EXTENSIONS, SLIDE_EXTENSIONS

    exts = SLIDE_EXTENSIONS + IMAGE_EXTENSIONS
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in exts)
            if not found:
                raise GlomsslError(f"folder {p} holds no slides ({', '.join(exts)})")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise GlomsslError(f"slide {p} does not exist; check the path")
    seen: set[Path] = set()
    uniq = []
    for p in out:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            uniq.append(p)
    return uniq


def output_names(paths: list[Path]) -> dict[Path, str]:
    """A folder name per slide: its stem, plus a short path hash where stems collide."""
    stems: dict[str, int] = {}
    for p in paths:
        stems[p.stem] = stems.get(p.stem, 0) + 1
    names = {}
    for p in paths:
        tag = hashlib.sha1(str(p.resolve()).encode()).hexdigest()[:6]
        names[p] = p.stem if stems[p.stem] == 1 else f"{p.stem}-{tag}"
    return names


def in_shard(name: str, shard: tuple[int, int] | None) -> bool:
    """Whether a slide (by file name) belongs to this shard: a stable hash, the same on every node."""
    if shard is None:
        return True
    return zlib.crc32(name.encode()) % shard[1] == shard[0]


def _file_tag(path: str | None) -> str | None:
    from glomssl.fsutil import sha256_file

    if path is None:
        return None
    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("*.safetensors"))
        return ",".join(sha256_file(f)[:16] for f in files) or str(p.resolve())
    return sha256_file(p)[:16] if p.is_file() else str(p)


def fingerprint(cfg: WsiConfig, detector: Any) -> dict[str, Any]:
    """The options that change results; a resumed run must have the same ones."""
    return {
        "detector": _file_tag(detector.path),
        "working": f"level {cfg.level}" if cfg.level is not None else cfg.mpp or detector.mpp,
        "tile": [cfg.tile, cfg.overlap],
        "conf": cfg.conf if cfg.conf is not None else detector.conf,
        "nms_iou": cfg.nms_iou,
        "crops": [cfg.crops, cfg.crop_um, cfg.crop_px, cfg.view_context],
        "classifier": _file_tag(cfg.classifier),
        "segmenter": [_file_tag(cfg.segmenter), cfg.segment_class],
    }


def check_out_dir(out: Path) -> Path:
    """The run-state folder; refuses an output folder holding files of something else."""
    from glomssl.fsutil import ensure_writable_dir

    ensure_writable_dir(out)
    state = out / STATE_DIR
    if not state.is_dir() and any(p.name != STATE_DIR for p in out.iterdir()):
        raise GlomsslError(
            f"--out {out} is not empty and holds no glomssl wsi run; pass a new or empty folder"
        )
    state.mkdir(exist_ok=True)
    return state


def _queue_path(state: Path, shard: tuple[int, int] | None) -> Path:
    return state / ("queue.sqlite" if shard is None else f"queue-{shard[0]}of{shard[1]}.sqlite")


def load_models(
    cfg: WsiConfig, device: str, detector_flag: str = "--detector"
) -> tuple[Any, Any, Any]:
    """(detector, classifier step or None, segmenter step or None) on ``device``; errors about the
    detector weights name ``detector_flag``, the option the user gave them with."""
    from glomssl.detect.model import load_detector
    from glomssl.slidechain.steps import load_classifier_step, load_segmenter_step

    detector = load_detector(cfg.detector, device, flag=detector_flag)
    classifier = load_classifier_step(cfg.classifier, detector.device) if cfg.classifier else None
    segmenter = (
        load_segmenter_step(cfg.segmenter, detector.device, cfg.segment_class)
        if cfg.segmenter
        else None
    )
    return detector, classifier, segmenter


def worker(
    cfg: WsiConfig,
    queue_path: str,
    device: str,
    threads: int | None = None,
    models: tuple[Any, Any, Any] | None = None,
) -> None:
    """Claim and process slides until the queue is empty (one process per device)."""
    from glomssl.slidechain.process import Context, process_slide, unreadable_slide
    from glomssl.slidechain.queue import RunQueue

    if threads:
        import torch

        torch.set_num_threads(threads)
    detector, classifier, segmenter = models or load_models(cfg, device)
    queue = RunQueue(queue_path)
    ctx = Context(cfg, detector, queue, classifier, segmenter)
    # with one slide in the run its skip reason is the command's own error: not said twice
    say_skips = not cfg.quiet and len(queue.slides()) > 1
    try:
        while (job := queue.claim()) is not None:
            try:
                result = process_slide(ctx, job)
            except GlomsslError as exc:
                queue.skip(job, str(exc))
                if say_skips:
                    ctx.log(f"wsi {job.name}: skipped: {str(exc).splitlines()[0]}")
                continue
            except Exception as exc:  # an unexpected failure on one slide must not stop the queue
                why = str(unreadable_slide(job, exc))  # names the slide, one line
                queue.skip(job, why)
                if say_skips:
                    ctx.log(f"wsi {job.name}: skipped: {why}")
                continue
            except BaseException:
                queue.release(job)
                raise
            queue.finish(job, result)
            if not cfg.quiet:
                ctx.log(
                    f"wsi {job.name}: {result['glomeruli']} glomeruli, {result['tiles']} tiles "
                    f"in {result['seconds']:.1f}s -> {Path(cfg.out) / job.name}"
                )
    finally:
        queue.close()


def _devices(cfg: WsiConfig) -> list[str]:
    from glomssl.engine import resolve_device

    first = resolve_device(cfg.device)
    if cfg.devices == 1:
        return [first]
    if first.startswith("cuda"):
        import torch

        n = torch.cuda.device_count()
        if cfg.devices > n:
            raise GlomsslError(f"--devices {cfg.devices}: this machine has {n} GPU(s)")
        return [f"cuda:{k}" for k in range(cfg.devices)]
    return ["cpu"] * cfg.devices


def run_wsi(cfg: WsiConfig, detector_flag: str = "--detector") -> dict[str, Any]:
    """Process every queued slide of this run (or shard); write and return the run summary."""
    from glomssl.fsutil import atomic_write_text
    from glomssl.slidechain.queue import RunQueue

    shard = parse_shard(cfg.shard) if cfg.shard else None
    paths = expand_slides(cfg.slides)
    names = output_names(paths)
    mine = [p for p in paths if in_shard(p.name, shard)]
    out = Path(cfg.out)
    devices = _devices(cfg)
    # models load before anything is written: a bad --detector/--classifier/--segmenter fails here
    models = load_models(cfg, devices[0] if len(devices) == 1 else "cpu", detector_flag)
    detector = models[0]
    state = check_out_dir(out)
    qpath = _queue_path(state, shard)
    queue = RunQueue(qpath)
    try:
        queue.check_fingerprint(fingerprint(cfg, detector), str(out))
        for other in state.glob("queue*.sqlite"):  # every shard of one folder is one run
            if other != qpath:
                oq = RunQueue(other)
                try:
                    oq.check_fingerprint(fingerprint(cfg, detector), str(out))
                finally:
                    oq.close()
        queue.add_slides([(str(p.resolve()), names[p]) for p in mine])
        queue.retry_skipped({names[p] for p in mine})
    finally:
        queue.close()
    if len(devices) == 1:
        worker(cfg, str(qpath), devices[0], models=models)
    else:
        import multiprocessing as mp

        del models
        ctx = mp.get_context("spawn")
        threads = max(1, (os.cpu_count() or 1) // len(devices)) if devices[0] == "cpu" else None
        procs = [ctx.Process(target=worker, args=(cfg, str(qpath), d, threads)) for d in devices]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
    queue = RunQueue(qpath)
    try:
        slides = queue.slides()
    finally:
        queue.close()
    given = {str(p.resolve()) for p in mine}
    summary = {
        "out": str(out),
        "shard": cfg.shard,
        "slides": len(slides),
        "done": sum(s["status"] == "done" for s in slides),
        "skipped": [
            {"slide": s["slide"], "reason": s["reason"]} for s in slides if s["status"] == "skipped"
        ],
        "pending": sum(s["status"] in ("pending", "running") for s in slides),
        "glomeruli": sum((s["result"] or {}).get("glomeruli", 0) for s in slides),
        "per_slide": [
            {
                "name": s["name"],
                "status": s["status"],
                "glomeruli": (s["result"] or {}).get("glomeruli"),
                "counts": (s["result"] or {}).get("counts"),
                "reason": s["reason"],
            }
            for s in slides
        ],
    }
    name = "run_summary.json" if shard is None else f"run_summary-{shard[0]}of{shard[1]}.json"
    atomic_write_text(out / name, json.dumps(summary, indent=2) + "\n")
    ours = [s for s in slides if s["slide"] in given]
    if ours and all(s["status"] == "skipped" for s in ours):
        first = ours[0]
        raise GlomsslError(f"{first['reason']}".splitlines()[0])
    if not cfg.quiet and summary["skipped"]:
        print(f"wsi: {len(summary['skipped'])} slide(s) skipped; see {out / name}", file=sys.stderr)
    return summary
