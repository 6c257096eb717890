"""Models by name: a small dict registry and :func:`create_model` (timm's pattern).

Every network glomssl trains is registered here under a short name, so commands take ``--model NAME``
and tests are parametrised over :data:`MODELS` (every model gets forward/backward tests). Builders take
keyword arguments only; a builder that does not know an argument raises TypeError, which
:func:`create_model` turns into a one-line error naming the model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from glomssl.errors import GlomsslError

#: name -> (builder, one-line description)
MODELS: dict[str, tuple[Callable[..., nn.Module], str]] = {}


def register_model(name: str, description: str) -> Callable[[Callable[..., nn.Module]], Any]:
    """Decorator: register ``builder`` under ``name``."""

    def deco(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in MODELS and MODELS[name][0] is not builder:
            raise ValueError(f"model name {name!r} registered twice")
        MODELS[name] = (builder, description)
        return builder

    return deco


def model_names() -> list[str]:
    return sorted(MODELS)


def create_model(name: str, **kw: Any) -> nn.Module:
    """Build the registered model ``name`` with keyword arguments (random initialisation).

    Models register themselves when their module is imported; ``glomssl.models`` (the package, always
    imported before this module) imports every built-in one.
    """
    if name not in MODELS:
        raise GlomsslError(f"unknown model {name!r}; choose one of {', '.join(sorted(MODELS))}")
    try:
        return MODELS[name][0](**kw)
    except TypeError as exc:
        raise GlomsslError(f"model {name!r}: {exc}") from exc
