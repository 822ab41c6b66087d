"""The torch weights a bundle carries for offline analysis, in a format that cannot run code.

A bundle may come from elsewhere, and unpickling a torch file can execute anything it names, so a
bundle's checkpoint is a safetensors file: raw tensors plus one JSON string of metadata (config,
input shape, class count). Loading one never unpickles; a file that is not valid safetensors is
refused with an error naming it. A training run's own `checkpoint.pt` (optimiser and generator
state, written and read on the training machine) stays a torch file but is read with
`weights_only=True`, which accepts tensors and plain containers only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from agilenn.bundle import BundleError
from partitioner.config import PartitionConfig

BUNDLE_CHECKPOINT = "partitioner.safetensors"
FORMAT_VERSION = 1
# One metadata key holding sorted JSON: safetensors writes its metadata map in no fixed order.
METADATA_KEY = "agilenn.checkpoint"
PARTS = ("model", "reference_extractor")


class CheckpointError(BundleError):
    """A checkpoint that is unreadable, corrupt, of an unsafe format or not an agilenn checkpoint
    (a BundleError, so that commands report it in one line like any other damaged bundle)."""


def save_bundle_checkpoint(folder: str | Path, model: nn.Module, reference_extractor: nn.Module,
                           config: PartitionConfig, input_shape: tuple[int, ...], num_classes: int) -> str:
    """Write the bundle checkpoint into `folder`; returns its file name (for the manifest)."""
    from safetensors.torch import save_file

    tensors = {f"{part}/{name}": tensor.detach().cpu().clone().contiguous()
               for part, module in zip(PARTS, (model, reference_extractor))
               for name, tensor in module.state_dict().items()}
    info = {"format": FORMAT_VERSION, "config": config.model_dump(mode="json"), "input_shape": list(input_shape),
            "num_classes": int(num_classes)}
    path = Path(folder) / BUNDLE_CHECKPOINT
    save_file(tensors, str(path), metadata={METADATA_KEY: json.dumps(info, sort_keys=True)})
    path.chmod(0o644)  # safetensors creates the file owner-only; a bundle is read by other accounts too
    return BUNDLE_CHECKPOINT


def load_bundle_checkpoint(path: str | Path) -> dict[str, Any]:
    """A bundle checkpoint as {"config", "model", "reference_extractor", "input_shape", "num_classes"}."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except (SafetensorError, OSError, ValueError) as exc:
        hint = "; export the bundle again with this version" if path.suffix == ".pt" else ""
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint ({exc}); "
                              f"it is not loaded any other way, since unpickling could run code{hint}") from exc
    if METADATA_KEY not in metadata:
        raise CheckpointError(f"{path} is a safetensors file but not an agilenn checkpoint ({METADATA_KEY} missing)")
    try:
        info = json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: its {METADATA_KEY} metadata is not valid JSON ({exc})") from None
    if info.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {info.get('format')!r} is not supported "
                              f"(this agilenn reads {FORMAT_VERSION})")
    state: dict[str, Any] = {part: {} for part in PARTS}
    for name, tensor in tensors.items():
        part, _, key = name.partition("/")
        if part not in state:
            raise CheckpointError(f"{path}: unexpected tensor {name!r}")
        state[part][key] = tensor
    return {**state, "config": info["config"], "input_shape": info["input_shape"], "num_classes": info["num_classes"]}


def load_run_checkpoint(path: str | Path) -> dict[str, Any]:
    """A training run's `checkpoint.pt`, read without executing anything it might name."""
    import pickle

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message is mostly advice to load without weights_only; keep only its reason
        reason = str(exc).partition("WeightsUnpickler error:")[2].strip().split("\n\n")[0].split(". ")[0]
        raise CheckpointError(f"{path} was not loaded: it is not a torch checkpoint of tensors and plain data "
                              f"only ({reason or type(exc).__name__})") from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"{path} is not a readable torch checkpoint ({exc})") from exc


def load_any_checkpoint(path: str | Path) -> dict[str, Any]:
    """A bundle's safetensors checkpoint or a training run's torch checkpoint, told apart by suffix."""
    if Path(path).suffix == ".safetensors":
        return load_bundle_checkpoint(path)
    return load_run_checkpoint(path)
