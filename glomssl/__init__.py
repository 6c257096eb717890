"""glomssl: a self-supervised and generative data factory for glomerular pathology.

Importing this package must stay cheap: no torch, no ultralytics, no faiss here.
"""

__version__ = "0.1.0"
