"""Model registry, timm-style: `create_model("seed-cnn", num_classes=7)`.

Every architecture is a function registered under a name (`ferkit.models.registry`); its keyword
arguments are plain data, so a model is saved as JSON (name + kwargs) beside safetensors weights and
rebuilt from that. Importing this package registers every architecture.
"""

from __future__ import annotations

from ferkit.models import cnn, ensemble, fast, mlp, resnet  # noqa: F401  (importing them fills the registry)
from ferkit.models.registry import (
    count_parameters, create_model, list_models, load_architecture, model_spec, register_model, save_architecture,
)

__all__ = ["count_parameters", "create_model", "list_models", "load_architecture", "model_spec",
           "register_model", "save_architecture"]
