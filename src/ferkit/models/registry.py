"""The model registry: architectures registered by name, built from plain data, saved and rebuilt as JSON."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from torch import nn

from ferkit.errors import UsageError
from ferkit.fileio import atomic_write_json

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_COMPOSITE: set[str] = set()  # built from other models' specs (the ensemble): not trainable by name alone


def register_model(name: str, composite: bool = False) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = fn
        if composite:
            _COMPOSITE.add(name)
        return fn

    return deco


def list_models() -> list[str]:
    """The architectures `ferkit train --model` accepts (composites such as the ensemble are left out)."""
    return sorted(set(_REGISTRY) - _COMPOSITE)


def create_model(name: str, num_classes: int = 7, **kwargs) -> nn.Module:
    if name not in _REGISTRY:
        raise UsageError(f"unknown model {name!r}; registered: {', '.join(list_models())}")
    model = _REGISTRY[name](num_classes=num_classes, **kwargs)
    model.ferkit_spec = {"name": name, "num_classes": num_classes, "kwargs": kwargs}
    return model


def model_spec(model: nn.Module) -> dict:
    """The plain-data recipe (name, num_classes, kwargs) that rebuilds this model."""
    return dict(model.ferkit_spec)


def save_architecture(model: nn.Module, path: str | Path, **extra) -> None:
    atomic_write_json(path, {**model_spec(model), **extra})


def load_architecture(path: str | Path) -> tuple[nn.Module, dict]:
    """Rebuild a model from its architecture JSON; returns (model, the whole JSON)."""
    spec = json.loads(Path(path).read_text())
    return create_model(spec["name"], spec["num_classes"], **spec.get("kwargs", {})), spec


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
