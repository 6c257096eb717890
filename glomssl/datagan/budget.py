"""How many images to synthesise at once within a memory budget.

Every command that draws images from a generator (the ``gan train`` fakes grid, ``gan generate``,
``datagan sample``, ``datagan project``'s reconstructions and ``datagan generate``) cuts its work into
batches sized by :func:`images_per_batch` instead of a fixed count, so a 1024 px network draws one image
at a time on a small machine and many on a large GPU, and an image never depends on which batch it
was drawn in (tested).

The per-image estimate follows the synthesis network layer by layer (float32, no gradients):

* an upsampling layer holds its input, the style-scaled copy, the transposed convolution's output
  ((2H+1)^2 per channel), that convolution's column buffer (9 x Cout x H^2) and the filtered output;
* a same-resolution layer holds its input, the scaled copy and the output;
* ``features=True`` (the label factory) keeps every layer's activations until the image is labelled.

It over-estimates a little on purpose (allocator slack); ``benchmarks/datagan_memory.py`` and
``benchmarks/gan.py`` report the measured peaks next to it.
"""

from __future__ import annotations

from typing import Any

#: default budget for the images in flight, on top of the network's own weights
DEFAULT_BUDGET_MB = 1024


def image_bytes(G: Any, features: bool = False) -> int:
    """Estimated peak bytes that one more image in a batch adds (see the module docstring)."""
    net = G.synthesis_net
    ch: dict[int, int] = net.channels
    peak = 0
    kept = 0
    for r in net.resolutions:
        cout = ch[r]
        if r > 4:
            cin, h = ch[r // 2], r // 2
            up = 2 * cin * h * h + 2 * cout * (r + 1) ** 2 + 9 * cout * h * h
            peak = max(peak, kept + up)
            kept += cout * r * r if features else 0
        same = 3 * cout * r * r
        peak = max(peak, kept + same)
        kept += cout * r * r if features else 0
    img = 2 * int(G.img_channels) * net.resolutions[-1] ** 2
    return 4 * (peak + img)


def images_per_batch(
    G: Any, budget_mb: float = DEFAULT_BUDGET_MB, features: bool = False, cap: int | None = None
) -> int:
    """Images per forward pass within ``budget_mb`` MiB (at least 1, at most ``cap``)."""
    n = max(1, int(budget_mb * 2**20 // max(1, image_bytes(G, features))))
    return min(n, cap) if cap is not None else n


def chunks(items: list[Any], size: int) -> list[list[Any]]:
    """``items`` in consecutive pieces of at most ``size``."""
    return [items[i : i + size] for i in range(0, len(items), max(1, size))]
