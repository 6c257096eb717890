"""The few-label glomerulosclerosis classifier (``glomssl finetune cls`` and ``glomssl classify``).

Glo-In-One (Yao et al., J. Med. Imaging 2022) asks whether an encoder pretrained without labels plus a
linear layer on 10% of the labels matches a network trained from scratch on all of them. This package
answers that question for any labelled crop set:

- :mod:`.data`: labelled images from a CSV or a manifest, classes, groups, unreadable files skipped;
- :mod:`.loss`: focal loss (Lin et al. 2017), gamma 2.5 as in the paper;
- :mod:`.metrics`: balanced accuracy, macro F1, one-vs-rest AUC, the confusion matrix and its PNG;
- :mod:`.model`: the classifier network (normalise -> ResNet trunk -> pool -> linear) and its export;
- :mod:`.linear`: the frozen-backbone protocol on cached features;
- :mod:`.network`: end-to-end training (``finetune``, ``scratch``) on Lightning;
- :mod:`.trainers`: one interface over the three protocols for the cross-validation loop;
- :mod:`.protocol`: the grouped K-fold protocol with inner 75/25 validation and label fractions;
- :mod:`.infer`: ``load_classifier`` / ``classify_images`` (a stable API) and ``glomssl classify``.
"""
