"""GAN quality metrics without downloads: FID and KID in the feature space of a glomssl encoder.

FID (Heusel et al. 2017): ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2)) between Gaussian fits
of real and generated features. KID (Binkowski et al. 2018): the unbiased MMD^2 with the cubic
polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged over random subsets.

glomssl downloads nothing, so the feature space is either an encoder trained by ``glomssl pretrain``
(``--metric-encoder RUN``; values comparable between snapshots and runs that use the same encoder, not
with published FIDs) or Inception-v3 from a weights file the user provides (``--metric-inception
FILE``, :mod:`glomssl.datagan.inception`; the standard FID, see there for how close to papers).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from glomssl.config import opt
from glomssl.datagan.fid import MetricEncoder, fid_from_features, kid_from_features  # noqa: F401
from glomssl.errors import GlomsslError


def capped_num(dataset: Any, num: int, option: str = "--num") -> int:
    """``num`` capped at the number of real images of an image dataset, with one warning on stderr
    when it is; slide datasets (an endless stream of crops) keep ``num``."""
    import sys

    from glomssl.datagan.dataset import SlideDataset

    if isinstance(dataset, SlideDataset) or num <= len(dataset):
        return num
    if len(dataset) < 2:
        raise GlomsslError(
            f"the real images hold {len(dataset)} readable image(s); FID/KID need at least 2"
        )
    print(
        f"warning: {option} {num} is more than the {len(dataset)} readable real images; FID/KID "
        f"score {len(dataset)} real and {len(dataset)} generated images (values depend on the "
        "number: compare only values scored at the same number)",
        file=sys.stderr,
    )
    return len(dataset)


class MetricState:
    """Real-image features computed once per run, then FID/KID of G_ema at each snapshot.

    Up to two feature spaces: a glomssl encoder (``source``; keys ``fid_enc``/``kid_enc``) and the
    standard Inception-v3 from a local weights file (``inception``; keys ``fid_inception``/
    ``kid_inception``, see :mod:`glomssl.datagan.inception`). Either or both may be given.

    As in ``gan metrics``, ``num`` is capped at the number of real images of an image dataset (with
    a warning on stderr, once, when the state is built): repeated real images would bias FID and KID.
    ``self.num`` is the number actually scored (real and generated); ``self.requested_num`` the one
    asked for. Slide datasets stream fresh crops, so they are not capped.
    """

    def __init__(
        self,
        source: str | torch.nn.Module | None,
        dataset: Any,
        num: int,
        device: str,
        inception: str | torch.nn.Module | None = None,
    ) -> None:
        self.spaces: list[tuple[str, MetricEncoder]] = []
        if source is not None:
            self.spaces.append(("enc", MetricEncoder(source, device=device)))
        if inception is not None:
            from glomssl.datagan.inception import InceptionEncoder

            self.spaces.append(("inception", InceptionEncoder(inception, device=device)))
        if not self.spaces:
            raise GlomsslError("FID/KID need --metric-encoder RUN and/or --metric-inception FILE")
        self.requested_num = num
        self.num = capped_num(dataset, num, "--metric-num")
        self.reals = {name: enc.dataset_features(dataset, self.num) for name, enc in self.spaces}

    @property
    def enc(self) -> MetricEncoder:
        """The first feature space's encoder."""
        return self.spaces[0][1]

    @property
    def real(self) -> np.ndarray:
        """The first feature space's real-image features."""
        return self.reals[self.spaces[0][0]]

    def evaluate(self, G: Any) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, enc in self.spaces:
            real = self.reals[name]
            fake = enc.generator_features(G, self.num, seed=0)
            n = min(len(real), len(fake))
            out[f"fid_{name}"] = fid_from_features(real, fake)
            out[f"kid_{name}"] = kid_from_features(real, fake, subset_size=min(1000, n))
        return out


MAX_NUM = 100_000  # images per FID/KID (twice the standard FID50k)


def check_out_file(path: str, option: str = "--out") -> None:
    """Refuse an output file that cannot be written, before any slow work: a folder, a path below a
    file, or below a folder without write permission. Creates nothing."""
    import os
    from pathlib import Path

    p = Path(path)
    if p.is_dir():
        raise GlomsslError(f"{option} {p} is a folder; pass a file name such as {p / 'fid.json'}")
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise GlomsslError(
            f"{option} {p}: {parent} is a file, not a folder; choose another {option} path"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise GlomsslError(
            f"{option} {p}: folder {parent} is not writable; choose a folder you can write to"
        )


@dataclass
class GanMetricsConfig:
    """Options of ``glomssl gan metrics``."""

    network: str = ""
    data: list[str] = field(default_factory=list)
    metric_encoder: str | None = None
    metric_inception: str | None = None
    num: int = opt(1000, ge=2, le=MAX_NUM)
    device: str = "auto"
    out: str | None = None

    def validate(self) -> None:
        from glomssl.engine import resolve_device

        resolve_device(self.device)
        if not self.metric_encoder and not self.metric_inception:
            raise GlomsslError(
                "gan metrics needs a feature space: pass --metric-encoder RUN and/or "
                "--metric-inception FILE"
            )


def run_gan_metrics_config(cfg: GanMetricsConfig) -> dict[str, Any]:
    """``glomssl gan metrics``: :func:`run_gan_metrics`, the result also written to ``cfg.out``."""
    if cfg.out:
        check_out_file(cfg.out)  # before the (slow) feature extraction
    result = run_gan_metrics(
        cfg.network, cfg.data, cfg.metric_encoder, cfg.metric_inception, cfg.num, cfg.device
    )
    if cfg.out:
        from glomssl.fsutil import atomic_write_text

        atomic_write_text(cfg.out, json.dumps(result) + "\n")
    return result


def run_gan_metrics(
    network: str,
    data: list[str],
    metric_encoder: str | None = None,
    metric_inception: str | None = None,
    num: int = 1000,
    device: str = "auto",
) -> dict[str, Any]:
    """FID/KID of a snapshot's G_ema against ``num`` real images (``glomssl gan metrics``).

    Real images are prepared as ``gan train`` prepares them (centre crop, resized to G's resolution;
    slide settings from the snapshot's config) and fakes come from fixed latents (seed 0), so values are
    comparable with the run's ``metrics.jsonl`` at the same ``num``. Returns the snapshot, its kimg, ``num``
    and ``fid_<space>``/``kid_<space>`` for each feature space given.
    """
    from pathlib import Path

    from glomssl.datagan.dataset import make_dataset
    from glomssl.datagan.snapshot import load_generator
    from glomssl.datagan.train_config import GanTrainConfig

    if not metric_encoder and not metric_inception:
        raise GlomsslError(
            "gan metrics needs a feature space: pass --metric-encoder RUN and/or "
            "--metric-inception FILE"
        )
    if not 2 <= num <= MAX_NUM:
        raise GlomsslError(f"--num {num} must lie in 2..{MAX_NUM} for FID/KID")
    if not data:
        raise GlomsslError("--data is required: the real images (folder or manifest)")
    for src in data:
        if not Path(src).exists():
            raise GlomsslError(f"--data {src} does not exist; pass an image folder or manifest")
    if metric_inception and not Path(metric_inception).is_file():
        raise GlomsslError(
            f"--metric-inception {metric_inception} does not exist; save torchvision's "
            "inception_v3 state dict there (see README) or drop the option"
        )
    from glomssl.engine import resolve_device

    device = resolve_device(device)
    G, meta = load_generator(network, device=device)
    rec = meta.get("config") or {}
    cfg = GanTrainConfig(
        data=list(data),
        resolution=int(G.img_resolution),
        slide_level=int(rec.get("slide_level") or 0),
        slide_mpp=rec.get("slide_mpp"),
    )
    dataset = make_dataset(cfg)
    from glomssl.datagan.dataset import SlideDataset

    warnings: list[str] = []
    if not isinstance(dataset, SlideDataset) and num > len(dataset):
        if len(dataset) < 2:
            raise GlomsslError(
                f"--data holds {len(dataset)} readable real image(s); FID/KID need at least 2"
            )
        # repeating real images would bias FID/KID: score as many as there are, and say so
        warnings.append(
            f"--num {num} is more than the {len(dataset)} readable real images in --data; "
            f"scored {len(dataset)} real and {len(dataset)} generated images (values depend on "
            "--num: compare only runs scored at the same --num)"
        )
        num = len(dataset)
    if metric_encoder and not Path(metric_encoder).exists():
        raise GlomsslError(
            f"--metric-encoder {metric_encoder} does not exist; pass a `glomssl pretrain` run "
            "folder or backbone .safetensors, or drop the option"
        )
    state = MetricState(
        metric_encoder or None, dataset, num, device, inception=metric_inception or None
    )
    result: dict[str, Any] = {
        "network": meta["snapshot"],
        "kimg": float(meta.get("kimg", 0.0)),
        "num": num,
    }
    result.update(state.evaluate(G))
    if warnings:
        result["warnings"] = warnings
    return result
