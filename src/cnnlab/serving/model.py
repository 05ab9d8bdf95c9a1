"""The model a server answers with: a run's runtime or an artifact, and Grad-CAM when it can.

Grad-CAM differentiates the checkpoint, whatever runtime answers: it explains the class the served
runtime answered (the one the page shows), and says so, with the checkpoint's own top class when an
INT8 model answered another.

Scoring goes through ``deploy.runtime`` (which runtime, its preprocessing) and
``models.inference.predict_probs`` (cnnlab's one batched loop), so a prediction over HTTP is the
one ``cnnlab predict`` prints for the same file.
"""

from __future__ import annotations

import io
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.deploy.runtime import Served, open_for_prediction
from cnnlab.deploy.settings import RUNTIMES
from cnnlab.errors import CnnlabError
from cnnlab.models.inference import predict_probs
from cnnlab.training.run_dir import RunFiles


@dataclass(frozen=True)
class CamAnswer:
    """A Grad-CAM overlay (PNG) for the class the served runtime answered, and the checkpoint's view."""

    png: bytes
    target: int  # the class the map explains: the served runtime's top class
    probability: float  # the served runtime's probability of it
    checkpoint_probs: torch.Tensor  # (classes,) the checkpoint's own softmax, which the map was computed on
    evidence: bool  # False: nothing in the image raised the class's score, the map is flat

    @property
    def checkpoint_top(self) -> int:
        return int(self.checkpoint_probs.argmax())


@dataclass
class ServedModel:
    """A runtime ready to score, why it was chosen, and the run folder (None for an artifact alone)."""

    served: Served
    why: str
    run: Path | None
    _cam: Any = field(default=None, repr=False)
    _cam_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def name(self) -> str:
        """The run's folder name, or the artifact's file name when served alone."""
        return self.run.name if self.run is not None else self.served.source.name

    @property
    def has_checkpoint(self) -> bool:
        """Grad-CAM needs the PyTorch weights: a run folder with a checkpoint."""
        if self.run is None:
            return False
        files = RunFiles(self.run)
        return files.best.is_file() or files.last.is_file()

    def infer(self, images: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities of uint8 (N, C, H, W) images through the served runtime."""
        served = self.served
        return torch.cat([probs for _, probs in predict_probs(served.model, images, served.normalize)])

    def batch_timing(self, batch: int, budget_s: float = 3.0) -> tuple[float, float]:
        """(ms per image one at a time, ms per image in a batch of ``batch``): medians of interleaved
        timings on blank images, at most about ``budget_s`` after one warm-up call of each."""
        served = self.served
        one = torch.zeros(1, served.channels, served.stored_side, served.stored_side, dtype=torch.uint8)
        many = one.expand(batch, -1, -1, -1).contiguous()
        self.infer(one), self.infer(many)
        singles: list[float] = []
        batched: list[float] = []
        deadline = time.perf_counter() + budget_s
        for _ in range(7):
            for images, out in ((one, singles), (many, batched)):
                started = time.perf_counter()
                self.infer(images)
                out.append((time.perf_counter() - started) * 1000 / len(images))
            if len(singles) >= 2 and time.perf_counter() > deadline:
                break
        return statistics.median(singles), statistics.median(batched)

    def gradcam(self, image: torch.Tensor) -> CamAnswer:
        """The Grad-CAM overlay of one uint8 (C, H, W) image for the class the served runtime answers
        (what ``/predict`` shows beside it), computed on the checkpoint, which Grad-CAM differentiates."""
        from PIL import Image

        from cnnlab.explain.cam import cam_session
        from cnnlab.explain.model_figures import overlay

        with self._cam_lock:
            if self._cam is None:
                self._cam = _cam_model(self.run)
        run, layer = self._cam
        answered = self.infer(image[None])[0]  # the served runtime's answer, as /predict gives it
        target = int(answered.argmax())
        shown = run.trained.normalize.view(image[None])  # what the model sees: the centre crop
        with cam_session(run.trained.model, layer, run.trained.normalize) as explain:
            maps = explain(shown, [target])
        blended = np.round(overlay(shown[0].numpy(), maps.heat[0]) * 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(blended).save(buffer, format="PNG")
        return CamAnswer(buffer.getvalue(), target, float(answered[target]), maps.probs[0], not maps.no_evidence(0))

    def cam_words(self, answer: CamAnswer) -> tuple[str, str]:
        """(caption, note) of a Grad-CAM answer: which class the map is for and which model answered it;
        the checkpoint's own top class when it differs, or that the photo holds no evidence ("" if neither)."""
        from cnnlab.explain.cam import no_evidence_text

        names, runtime = self.served.class_names, self.served.runtime
        explained = f"'{names[answer.target]}' ({answer.probability:.1%})"
        caption = (
            f"Grad-CAM map for {explained}, the class the PyTorch checkpoint answered"
            if runtime == "pytorch"
            else f"Grad-CAM map for {explained}, the class {RUNTIMES[runtime]} answered; computed on the "
            "PyTorch checkpoint"
        )
        notes = []
        if not answer.evidence:
            said = no_evidence_text(names[answer.target])
            notes.append(f"{said[0].upper()}{said[1:]}.")
        if answer.checkpoint_top != answer.target:
            own = answer.checkpoint_probs
            notes.append(
                f"The checkpoint's own top class is '{names[answer.checkpoint_top]}' "
                f"({float(own[answer.checkpoint_top]):.1%}); it gives '{names[answer.target]}' "
                f"{float(own[answer.target]):.1%}."
            )
        return caption, " ".join(notes)

    def describe(self) -> dict[str, Any]:
        served = self.served
        return {
            "runtime": served.runtime,
            "runtime_name": RUNTIMES[served.runtime],
            "why": self.why,
            "source": str(served.source),
            "threads": served.threads,
            "classes": served.class_names,
            "input": {"size": served.side, "channels": served.channels},
        }


def _cam_model(run: Path | None) -> tuple[Any, str]:
    """The run's checkpoint model and its default Grad-CAM layer (the last spatial block)."""
    from cnnlab.explain.commands import probe_run
    from cnnlab.explain.inputs import open_explained
    from cnnlab.explain.layers import gradcam_layer

    if run is None:
        raise CnnlabError("Grad-CAM needs a run folder with a checkpoint; this server serves an artifact alone")
    explained = open_explained(run)
    return explained, gradcam_layer(explained.trained.model, probe_run(explained)).name


def open_served(target: str | Path, runtime: str = "auto", threads: int = 1) -> ServedModel:
    """The model to serve from a run folder (the runtime ``auto``/``fastest`` picks, or ``runtime``) or a file.

    Raises:
        CnnlabError: not a run folder nor an artifact, no checkpoint and no artifact, an unreadable file.
    """
    served, why = open_for_prediction(target, runtime, threads)
    path = Path(target).expanduser()
    return ServedModel(served, why, path if path.is_dir() else None)
