"""The models layer: encoders (ResNet trunks), the U-Net decoder, the registry (``create_model``).

Every stage (ssl, datagan, finetune) imports networks from here, never from another stage.
"""

from glomssl.models.registry import MODELS, create_model, model_names, register_model

__all__ = ["MODELS", "create_model", "model_names", "register_model"]
