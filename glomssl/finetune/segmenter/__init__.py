"""The segmenter of ``glomssl finetune seg`` / ``glomssl segment`` (Glo-In-One v2's dynamic head on
partially labelled masks): data tables and per-task batches, losses, metrics, training, reports,
inference on images and slides."""
