"""Reading checkpoints back: plain tensors only (``weights_only=True``), never arbitrary pickles."""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from cnnlab.data.normalize import Normalize
from cnnlab.data.preprocess import Preprocess
from cnnlab.errors import CnnlabError
from cnnlab.io import atomic_write_bytes
from cnnlab.models.weights import read_state_dict
from cnnlab.threads import for_command
from cnnlab.training.architecture import apply_architecture, read_architecture
from cnnlab.training.build import build_model
from cnnlab.training.record import RunRecord
from cnnlab.training.run_dir import RunFiles, read_record, read_run_config

if TYPE_CHECKING:
    from cnnlab.training.module import ClassifierModule


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Loads a Lightning checkpoint safely.

    Raises:
        CnnlabError: when the file is missing, truncated, or needs unsafe unpickling.
    """
    path = Path(path)
    if not path.is_file():
        raise CnnlabError(f"checkpoint '{path}' not found; was the run finished or interrupted early?")
    try:
        state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
        return state
    except pickle.UnpicklingError:
        raise CnnlabError(
            f"checkpoint '{path}' holds pickled Python objects that could run code; refused "
            "(cnnlab checkpoints hold plain tensors only)"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CnnlabError(
            f"checkpoint '{path}' is damaged or truncated ({type(exc).__name__}); use the other "
            "checkpoint in the same folder (best.ckpt / last.ckpt) or train again"
        ) from None


def model_state(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The network's weights from a ClassifierModule checkpoint (``model.`` prefix removed)."""
    state = checkpoint.get("state_dict")
    if not isinstance(state, dict):
        raise CnnlabError("checkpoint has no state_dict; it was not written by cnnlab")
    return {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}


def replace_model_weights(path: Path, state: dict[str, torch.Tensor]) -> None:
    """Writes ``state`` as the network weights of the checkpoint at ``path`` (the rest of it, e.g. the
    epoch and optimiser state, unchanged), atomically: a crash leaves the old file whole."""
    checkpoint = read_checkpoint(path)
    checkpoint["state_dict"].update({f"model.{k}": v.detach().cpu() for k, v in state.items()})
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_model_weights(model: nn.Module, path: str | Path) -> None:
    """Loads a checkpoint's network weights into ``model``."""
    model.load_state_dict(model_state(read_checkpoint(path)))


def load_module_weights(module: ClassifierModule, path: str | Path) -> None:
    """Loads a checkpoint's network weights into a ClassifierModule's model."""
    load_model_weights(module.model, path)


@dataclass
class TrainedModel:
    """A reopened run: its network in eval mode, input scaling, classes, input format and run record."""

    model: nn.Module
    normalize: Normalize
    class_names: list[str]
    record: RunRecord  # its run.json
    preprocess: Preprocess  # the input format it trained on (the record's, checked to be there)


def run_weights(files: RunFiles, which: str = "best") -> dict[str, torch.Tensor]:
    """The network weights of a run: ``best`` (or ``last``) checkpoint, else a pruned run's own weights.

    Raises:
        CnnlabError: when the run has no weights yet.
    """
    if files.best.is_file() or files.last.is_file():
        path = files.best if which == "best" and files.best.is_file() else files.last
        return model_state(read_checkpoint(path))
    if files.pruned_weights.is_file():
        return read_state_dict(files.pruned_weights)  # safetensors: tensors only
    raise CnnlabError(
        f"run '{files.root}' has no checkpoint yet (it stopped before its first epoch "
        f"ended); resume it with: cnnlab train --resume {files.root}"
    )


def load_trained(files: RunFiles, which: str = "best") -> TrainedModel:
    """Rebuilds a run's network from its folder alone and loads ``best`` (or ``last``) weights.

    The network is in the memory layout it trained in (channels_last when the run's config says
    so; ``run_batches`` then feeds it NHWC batches). A pruned run's network is the config's
    architecture resized as its ``architecture.json`` says.

    Raises:
        CnnlabError: when the run has no checkpoint yet.
    """
    for_command()  # every command that opens a run computes on the thread policy's count (cnnlab.threads)
    config = read_run_config(files)
    record = read_record(files)
    state = run_weights(files, which)
    # Architecture only: the trained weights replace any starting weights.
    config = replace(config, model=replace(config.model, pretrained=False, weights=None))
    preprocess = record.preprocess
    if preprocess is None:
        raise CnnlabError(
            f"{files.meta} has no 'preprocess' record (the run's input format); restore it or train again"
        )
    model = build_model(config, len(record.class_names), preprocess)
    resized = read_architecture(files.architecture)
    if resized:
        apply_architecture(model, resized, state)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CnnlabError(
            f"the weights of '{files.root}' do not fit its model ({str(exc).splitlines()[0][:120]}); "
            "was config.yaml or architecture.json edited?"
        ) from None
    model.eval()
    if config.train.channels_last:
        # The layout it trained and was validated in: scoring a fast-cifar run channels_last took
        # 6.3-7.5 s against 13.6-14.6 s contiguous for 5,000 images (bf16, 2 cores).
        model.to(memory_format=torch.channels_last)
    return TrainedModel(model, Normalize.of(preprocess), list(record.class_names), record, preprocess)
