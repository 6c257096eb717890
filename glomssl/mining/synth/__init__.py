"""Synthetic compound figures with exact panel boxes: training data for the panel detector.

Glo-In-One (and SimCFS before it) trained its figure separator on synthetic compound figures because
labelled real ones are rare. The package is split by concept:

- :mod:`.panels`: what goes inside one panel (painters, fonts, the user's image pool);
- :mod:`.layouts`: where the panels go (grids, guillotine cuts, justified rows, strips, ...);
- :mod:`.drawing`: one figure (layout + panels + letters, headers and captions), exact boxes;
- :mod:`.dataset`: ``glomssl separator synth`` (a YOLO data set on disk);
- :mod:`.heldout`: an independent layout generator used only to evaluate separators, never to train.
"""

from glomssl.mining.synth.dataset import SynthConfig, run_synth, yolo_lines
from glomssl.mining.synth.drawing import KIND_NAMES, KIND_WEIGHTS, make_figure
from glomssl.mining.synth.layouts import LAYOUT_WEIGHTS, LAYOUTS
from glomssl.mining.synth.panels import Fonts, load_pool, paint_micrograph

__all__ = [
    "KIND_NAMES",
    "KIND_WEIGHTS",
    "LAYOUTS",
    "LAYOUT_WEIGHTS",
    "Fonts",
    "SynthConfig",
    "load_pool",
    "make_figure",
    "paint_micrograph",
    "run_synth",
    "yolo_lines",
]
