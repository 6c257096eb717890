"""Fine-tuning (to come): the dynamic-head multi-class glomerular segmenter for partially labelled
data (Glo-In-One v2), the few-label glomerulosclerosis classifier, their losses, metrics, data and
training loops (``glomssl finetune``)."""
