"""Glomerulus detection: training tiles from crops, a YOLO detector, and slide-wide inference.

- :mod:`glomssl.detect.geometry`: boxes and their circle view (CircleNet's centre + radius), box and
  circle IoU, circle NMS, detection matching and AP50.
- :mod:`glomssl.detect.mosaic`: detector training tiles built from glomerulus crops with masks (random
  positions, scales and rotations on real tissue background, exact boxes from the masks), or cut from
  annotated large fields.
- :mod:`glomssl.detect.model`: the packaged detector layout, safe weight loading, prediction on tiles.
- :mod:`glomssl.detect.train`: ``glomssl detect train``.
- :mod:`glomssl.detect.slide`: detection over a whole slide (tissue tiles at a working resolution,
  seam merging, level-0 output) -- ``glomssl detect``.
"""
