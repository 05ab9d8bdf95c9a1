"""A run reopened for explaining, and the user's images prepared exactly as the run's training did."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from cnnlab.errors import CnnlabError, suggest
from cnnlab.training.checkpoint import TrainedModel, load_trained
from cnnlab.training.run_dir import RunFiles, open_run, read_run_config

log = logging.getLogger("cnnlab")


@dataclass(frozen=True)
class ExplainedRun:
    """A run folder with its trained network (in the memory layout it trained in) and settings."""

    files: RunFiles
    trained: TrainedModel
    model_name: str
    workers: int

    def out_dir(self, out: str | Path | None) -> Path:
        """Where a command writes: ``--out``, else ``RUN/explain/``."""
        return Path(out) if out is not None else self.files.explain


@dataclass(frozen=True)
class UserImages:
    """Decoded images (uint8 N, C, H, W at the run's size), their files, and the true class when known."""

    images: torch.Tensor
    paths: list[Path]
    true: list[int | None]  # the class whose folder holds the image, when it is one of the run's classes


def open_explained(run: str | Path) -> ExplainedRun:
    """Opens a run and its best checkpoint (in the memory layout it trained in).

    Raises:
        CnnlabError: not a run folder, or no checkpoint yet.
    """
    files = open_run(run)
    config = read_run_config(files)
    return ExplainedRun(files, load_trained(files), config.model.name, config.data.workers)


def load_images(run: ExplainedRun, inputs: Sequence[str | Path]) -> UserImages:
    """Image files and folders decoded with the run's preprocessing: channels, size, centre crop.

    Colour images given to a grayscale run become luminance, gray ones given to a colour run are
    repeated to three channels, as in training. A file named on the command line that cannot be
    read stops the command; one found inside a folder is skipped with a warning.

    Raises:
        CnnlabError: a missing input, an unreadable file named directly, or no usable image.
    """
    from cnnlab.data.discover import expand_inputs
    from cnnlab.data.folder import decode_files

    paths = expand_inputs(inputs)
    named = {Path(text).expanduser() for text in inputs if Path(text).expanduser().is_file()}
    trained = run.trained
    decoded, skipped = decode_files(
        [(path, i) for i, path in enumerate(paths)],
        trained.preprocess.channels,
        trained.preprocess.stored_side,
        run.workers,
        fit=trained.preprocess.fit,
    )
    for item in skipped:
        if Path(item.path) in named:
            raise CnnlabError(
                f"IMG {item.path} could not be read as an image ({item.reason}); "
                "give image files (.png, .jpg, ...) or folders of them"
            )
    if skipped:
        log.warning("%d unreadable file(s) skipped (first: %s: %s)", len(skipped), skipped[0].path, skipped[0].reason)
    if len(decoded) == 0:
        raise CnnlabError(f"no readable image in {', '.join(map(str, inputs))}")
    kept = [paths[i] for i in decoded.labels.tolist()]  # the label slot carries each file's position
    index = {name: i for i, name in enumerate(trained.class_names)}
    shown = trained.normalize.view(decoded.images).contiguous()  # the centre crop the model sees
    return UserImages(shown, kept, [index.get(path.parent.name) for path in kept])


def class_index(run: ExplainedRun, name: str | None) -> int | None:
    """The index of ``--class NAME``, None when not given.

    Raises:
        CnnlabError: a class the run was not trained on.
    """
    if name is None:
        return None
    names = run.trained.class_names
    if name in names:
        return names.index(name)
    shown = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
    raise CnnlabError(f"--class: '{name}' is not a class of this run" + suggest(name, names, f"its classes: {shown}"))


def file_names(paths: list[Path], prefix: str) -> list[str]:
    """``<prefix>_<image name>.png`` per image, numbered when two images share a name."""
    names, used = [], set()
    for path in paths:
        base, number = f"{prefix}_{path.stem}", 1
        name = f"{base}.png"
        while name in used:
            number += 1
            name = f"{base}_{number}.png"
        used.add(name)
        names.append(name)
    return names
