"""ultralytics must not change torch's process-wide settings for what runs after it: its CPU device
selection sets the intra-op thread count, and training with ``deterministic=True`` turns on
deterministic algorithms (``glomssl.mining.yolo.torch_settings_kept``)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from glomssl.mining.separate import Separator
from glomssl.mining.yolo import torch_settings_kept

ODD_THREADS = 13  # ultralytics sets min(8, cores - 1): never this


def test_separating_leaves_torch_threads_as_they_were() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(ODD_THREADS)
    try:
        fig = np.full((120, 200, 3), 255, np.uint8)
        fig[10:110, 10:95] = np.random.default_rng(0).integers(40, 200, (100, 85, 3), np.uint8)
        fig[10:110, 105:190] = np.random.default_rng(1).integers(40, 200, (100, 85, 3), np.uint8)
        panels = Separator("yolo").split([Image.fromarray(fig)])  # a fresh detector: first predict
        assert panels and panels[0]
        assert torch.get_num_threads() == ODD_THREADS
    finally:
        torch.set_num_threads(before)


def test_the_context_puts_threads_and_determinism_back() -> None:
    before = torch.get_num_threads()
    assert not torch.are_deterministic_algorithms_enabled()
    try:
        with torch_settings_kept():
            torch.set_num_threads(1 if before != 1 else 2)
            torch.use_deterministic_algorithms(True, warn_only=True)
        assert torch.get_num_threads() == before
        assert not torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True)  # an outer setting is kept too
        with torch_settings_kept():
            torch.use_deterministic_algorithms(False)
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
        torch.set_num_threads(before)
