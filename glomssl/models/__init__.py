"""The models layer: encoders (ResNet trunks), the U-Net decoder, the registry (``create_model``).

Every stage (ssl, datagan, finetune) imports networks from here, never from another stage. Importing
this package imports every built-in model module, so each registers itself in
:data:`glomssl.models.registry.MODELS` before anything asks for it.
"""

import importlib.util

from glomssl.models import backbones, unet  # noqa: F401  (register themselves)
from glomssl.models.registry import MODELS, create_model, model_names, register_model

if importlib.util.find_spec("glomssl.models.segmenters") is not None:
    importlib.import_module("glomssl.models.segmenters")  # the fine-tuning models register too

__all__ = ["MODELS", "create_model", "model_names", "register_model"]
