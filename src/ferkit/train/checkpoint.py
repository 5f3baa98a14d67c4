"""Checkpoints as safetensors (no pickle), written atomically: a kill never leaves a corrupt file.

A training checkpoint holds the model, the optimiser's tensors, the RNG states as tensors, and the
rest (optimiser hyper-parameters, scheduler state, history) as JSON in the safetensors metadata.

In a distributed run (torchrun) rank 0 alone writes: every rank holds the same weights, and on the
others a save is a no-op.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file, safe_open, save_file

from ferkit.fileio import FILE_MODE

MODEL_PREFIX = "model."  # a training checkpoint's model tensors; optimiser and RNG tensors sit beside them


def atomic_save(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict | None = None) -> None:
    """Write to a hidden temp file beside `path`, flush it to disk, then rename over `path`.

    A process killed at any moment leaves either the old complete file or the new complete one;
    a failed write removes its temp file. Only rank 0 of a distributed run writes.
    """
    if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
        return
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    try:
        save_file(tensors, str(tmp), metadata={k: json.dumps(v) for k, v in (metadata or {}).items()})
        os.chmod(tmp, FILE_MODE)  # safetensors makes its files 0600; a weights file is as readable as any other
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            from ferkit.errors import OutputError

            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_weights(model: torch.nn.Module, path: str | Path, **metadata) -> None:
    atomic_save(dict(model.state_dict()), path, metadata)


def load_weights(model: torch.nn.Module, path: str | Path) -> dict:
    """Load weights into model; returns the metadata stored with them."""
    state = load_file(str(path))
    model.load_state_dict({k: v for k, v in state.items()})
    return read_metadata(path)


def load_init_weights(model: torch.nn.Module, path: str | Path, what: str = "--init") -> None:
    """Starting weights for a fine-tune or warm restart (`train --init`) or a teacher: a weights file or a
    training checkpoint (last.safetensors). The architecture must match; `what` names the option in errors."""
    from ferkit.errors import DataError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what}: no weights at {path}")
    try:
        tensors = model_tensors(load_file(str(path)))
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise DataError(f"{what}: {path} is not a safetensors weights file ({exc})") from None
    own = model.state_dict()
    wrong = [k for k in own if k not in tensors or tensors[k].shape != own[k].shape]
    if wrong or len(tensors) != len(own):
        raise DataError(f"{what}: {path} does not fit this model (first mismatch: {(wrong or sorted(set(tensors) - set(own)))[0]}); "
                        "use the same --model and classes/heads as the run that made it")
    model.load_state_dict(tensors)


def model_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's own tensors: a training checkpoint's `model.`-prefixed ones, or a weights file as it is."""
    if not any(k.startswith(MODEL_PREFIX) for k in tensors):
        return tensors
    return {k[len(MODEL_PREFIX):]: v for k, v in tensors.items() if k.startswith(MODEL_PREFIX)}


def read_metadata(path: str | Path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return {k: json.loads(v) for k, v in (f.metadata() or {}).items()}


def save_training_state(path: str | Path, model, optimizer, scheduler, gen: torch.Generator, state: dict,
                        extra: dict[str, torch.Tensor] | None = None) -> None:
    """extra: more tensors that must stay in step with the model (a weight average), under their own prefix."""
    tensors = {f"{MODEL_PREFIX}{k}": v for k, v in model.state_dict().items()} | (extra or {})
    opt = optimizer.state_dict()
    opt_meta = {"param_groups": opt["param_groups"], "keys": {}}
    for idx, slots in opt["state"].items():
        for name, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"optim.{idx}.{name}"] = value
            else:
                opt_meta["keys"][f"{idx}.{name}"] = value
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.gen"] = gen.get_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    meta = {"optimizer": opt_meta, "scheduler": scheduler.state_dict() if scheduler else None, "state": state}
    atomic_save(tensors, path, meta)


def load_training_state(path: str | Path, model, optimizer, scheduler, gen: torch.Generator) -> dict:
    tensors = load_file(str(path))
    meta = read_metadata(path)
    model.load_state_dict(model_tensors(tensors))
    opt_meta = meta["optimizer"]
    opt_state: dict = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            idx, name = key[6:].split(".", 1)
            opt_state.setdefault(int(idx), {})[name] = value
    for key, value in opt_meta["keys"].items():
        idx, name = key.split(".", 1)
        opt_state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": opt_state, "param_groups": opt_meta["param_groups"]})
    if scheduler is not None and meta["scheduler"] is not None:
        scheduler.load_state_dict(meta["scheduler"])
    torch.set_rng_state(tensors["rng.torch"])
    gen.set_state(tensors["rng.gen"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return meta["state"]
