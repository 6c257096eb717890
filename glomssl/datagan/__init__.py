"""Generative data factory: an in-house StyleGAN2-ADA (networks, ADA augmentation, losses, training),
W+ projection, per-pixel feature extraction and the datasetGAN labeler ensemble, and bounded-memory
generation of labelled synthetic sets (``glomssl gan``, ``datagan``)."""
