"""Shared pytest set-up: markers, the shared real-data folder, an offline ultralytics, and the
stand-in glomerulus detector of the slide tests (`blue`)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from _proc import RENDEZVOUS_VARS

ROOT = Path(__file__).resolve().parents[1]

# Ultralytics must never reach the network or write into the user's home: set this up before any test
# (or the code under test) imports it.
_YOLO_DIR = Path(tempfile.mkdtemp(prefix="glomssl-yolo-cfg-"))
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "False")
os.environ.setdefault("YOLO_CONFIG_DIR", str(_YOLO_DIR))
os.environ.setdefault("YOLO_VERBOSE", "False")
os.environ.setdefault("OMP_NUM_THREADS", "2")


def shared_data_dir() -> Path | None:
    """../shared/data beside the project, or $GLOMSSL_SHARED_DATA; None when absent."""
    env = os.environ.get("GLOMSSL_SHARED_DATA")
    cand = Path(env) if env else ROOT.parent / "shared" / "data"
    return cand if cand.is_dir() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real public data folder; tests using it skip with a reason when it is absent."""
    d = shared_data_dir()
    if d is None:
        pytest.skip(
            "real data not found: put the shared data at ../shared/data or set GLOMSSL_SHARED_DATA"
        )
    return d


@pytest.fixture(autouse=True)
def _no_leaked_rendezvous() -> Iterator[None]:
    """An in-process DDP run (Lightning's ddp_fork) sets MASTER_PORT in this process and leaves it:
    every later DDP run of the session would then reuse that one port, free or not. Restore."""
    before = {k: os.environ.get(k) for k in RENDEZVOUS_VARS}
    yield
    for k, v in before.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    have_data = shared_data_dir() is not None
    try:
        import torch

        have_gpu = bool(torch.cuda.is_available())
    except Exception:  # pragma: no cover
        have_gpu = False
    for item in items:
        if "realdata" in item.keywords and not have_data:
            item.add_marker(
                pytest.mark.skip(reason="../shared/data absent (set GLOMSSL_SHARED_DATA to run)")
            )
        if "gpu" in item.keywords and not have_gpu:
            item.add_marker(pytest.mark.skip(reason="no CUDA device on this machine"))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_YOLO_DIR, ignore_errors=True)


class BlueDetector:
    """Stands in for the YOLO glomerulus detector in slide tests: connected blue components."""

    mpp = 2.0
    conf = 0.5
    device = "cpu"

    def __init__(self, path: str) -> None:
        self.path = path

    def predict(self, tiles: list[np.ndarray], conf: float | None = None) -> list[Any]:
        out = []
        for t in tiles:
            blue = (t[..., 2].astype(int) - t[..., 0].astype(int)) > 80
            n, _, st, _ = cv2.connectedComponentsWithStats(blue.astype(np.uint8))
            keep = [s for s in st[1:n] if s[4] > 15]
            boxes = np.array([(s[0], s[1], s[0] + s[2], s[1] + s[3]) for s in keep], float)
            out.append((boxes.reshape(-1, 4), np.full(len(keep), 0.9)))
        return out


@pytest.fixture()
def blue(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    weights = tmp_path / "blue.safetensors"
    weights.write_bytes(b"stand-in detector")
    monkeypatch.setattr(
        "glomssl.detect.model.load_detector",
        lambda w=None, d="cpu", flag="--weights": BlueDetector(str(weights)),
    )
    return str(weights)
