"""Self-supervised pretraining: histology augmentations, SimSiam from lightly's blocks, region-level
contrastive encoder-decoder, data from folders/manifests/whole-slide images, embedding and probes
(``glomssl pretrain``, ``embed``, ``probe``)."""
