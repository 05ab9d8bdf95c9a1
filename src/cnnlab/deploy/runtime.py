"""A run's model behind any runtime: its checkpoint (PyTorch), TorchScript, ONNX Runtime FP32 or INT8.

Every artifact opens as a ``Served``: an ``nn.Module`` in eval mode (an ONNX Runtime session is
wrapped as one), with the classes and preprocessing it carries inside. So cnnlab's one batched
inference loop (``models.inference``) scores, predicts and times them all alike, and an artifact
copied away from its run folder still predicts what the checkpoint does.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab.data.normalize import Normalize
from cnnlab.data.preprocess import Preprocess
from cnnlab.deploy.settings import ACCURACY_TOLERANCE, DEFAULT_THREADS, EXACT_RUNTIMES, RUNTIME_CHOICES, RUNTIMES
from cnnlab.errors import CnnlabError
from cnnlab.io import atomic_write_json
from cnnlab.threads import for_command
from cnnlab.training.checkpoint import TrainedModel, load_trained
from cnnlab.training.run_dir import RunFiles, open_run, read_optional_json
from cnnlab.training.tracking import log_model_files

log = logging.getLogger("cnnlab")

FORMAT = "cnnlab-model/1"
ONNX_KEY = "cnnlab"  # ONNX metadata_props key holding the JSON metadata
TORCHSCRIPT_EXTRA = "cnnlab.json"  # the extra file of a TorchScript archive holding it


def artifact_path(files: RunFiles, runtime: str) -> Path | None:
    """The file a runtime serves from (None for PyTorch, which uses the checkpoint)."""
    return {"torchscript": files.torchscript, "onnx": files.onnx, "int8": files.int8_onnx}.get(runtime)


def model_metadata(trained: TrainedModel, files: RunFiles) -> dict[str, Any]:
    """What an artifact carries so that it predicts on its own: classes and preprocessing."""
    return {
        "format": FORMAT,
        "class_names": trained.class_names,
        "preprocess": trained.preprocess.to_json(),
        "run": files.root.name,
        "model": trained.record.model.name,
    }


def _checked(meta: Any, where: Path) -> dict[str, Any]:
    pre = meta.get("preprocess") if isinstance(meta, dict) else None
    if not (
        isinstance(meta, dict)
        and isinstance(meta.get("class_names"), list)
        and isinstance(pre, dict)
        and all(k in pre for k in ("image_size", "channels", "mean", "std"))
    ):
        raise CnnlabError(
            f"'{where}' has no cnnlab metadata (classes and preprocessing); export it with "
            "cnnlab export RUN, or pass the run folder"
        )
    return meta


@dataclass
class Served:
    """A model ready to score uint8 images through ``models.inference``, with what it needs to know."""

    model: nn.Module
    class_names: list[str]
    preprocess: Preprocess
    runtime: str  # a key of RUNTIMES
    source: Path
    threads: int

    @property
    def normalize(self) -> Normalize:
        return Normalize.of(self.preprocess)

    @property
    def channels(self) -> int:
        return self.preprocess.channels

    @property
    def side(self) -> int:
        """The (square) side of the model's input."""
        return self.preprocess.side

    @property
    def stored_side(self) -> int:
        """The side uploads and files are decoded to: the input plus the margin it is centre-cropped from."""
        return self.preprocess.stored_side

    @property
    def label(self) -> str:
        """The runtime's name and what it is, as every prediction names it: ``int8 (ONNX Runtime INT8)``."""
        return f"{self.runtime} ({RUNTIMES[self.runtime]})"

    def describe(self) -> str:
        return f"{self.label}, {self.source}, {self.threads} thread{'s' if self.threads > 1 else ''}"


class OrtModule(nn.Module):
    """An ONNX Runtime session called like a module: float tensor in, logits tensor out."""

    def __init__(self, session: Any) -> None:
        super().__init__()
        self.session = session
        self.input_name = session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feed = {self.input_name: x.detach().cpu().contiguous().numpy()}
        return torch.from_numpy(self.session.run(None, feed)[0])


def ort_session(path: Path, threads: int, optimized_copy: Path | None = None) -> Any:
    """An ONNX Runtime CPU session with all graph optimisations (fusions make INT8 integer kernels).

    Raises:
        CnnlabError: when the file is not a readable ONNX model.
    """
    import onnxruntime as ort

    threads = for_command(threads)  # fixed for the session's life: ORT cannot change it later
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: ORT's notes about unused initializers are noise here
    if threads > 1:  # spinning threads fight other jobs for the cores (measured slower on a shared box)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if optimized_copy is not None:
        options.optimized_model_filepath = str(optimized_copy)
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001  ORT raises its own classes (InvalidProtobuf, Fail, ...) for bad files
        raise CnnlabError(f"'{path}' is not a readable ONNX model ({str(exc).splitlines()[0][:120]})") from None


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """PyTorch's intra-op threads set to ``threads`` (0: the thread policy's) inside, restored afterwards."""
    saved = torch.get_num_threads()
    torch.set_num_threads(for_command(threads))
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def _open_onnx(path: Path, threads: int) -> tuple[nn.Module, dict[str, Any], str]:
    session = ort_session(path, threads)
    raw = session.get_modelmeta().custom_metadata_map.get(ONNX_KEY)
    try:
        meta = json.loads(raw) if raw else None
    except ValueError:
        meta = None
    runtime = "int8" if (meta or {}).get("quantized") else "onnx"
    return OrtModule(session), _checked(meta, path), runtime


def _open_torchscript(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    import warnings

    extra = {TORCHSCRIPT_EXTRA: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit's deprecation notice: the format is still read
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except (RuntimeError, ValueError, OSError) as exc:
        raise CnnlabError(f"'{path}' is not a readable TorchScript file ({str(exc).splitlines()[0][:100]})") from None
    try:
        meta = json.loads(extra[TORCHSCRIPT_EXTRA] or "null")
    except ValueError:
        meta = None
    return module.eval(), _checked(meta, path)


def open_artifact(path: str | Path, threads: int = DEFAULT_THREADS) -> Served:
    """An exported model file on its own: ``.onnx`` (FP32 or INT8) or TorchScript.

    Raises:
        CnnlabError: a missing file, another kind of file, or one without cnnlab metadata.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CnnlabError(f"'{path}' not found; give a run folder, a .onnx or a TorchScript (.ts) file")
    if zipfile.is_zipfile(path):  # TorchScript archives are zip files; ONNX files are protobuf
        model, meta = _open_torchscript(path)
        runtime = "torchscript"
    elif path.suffix.lower() == ".onnx":
        model, meta, runtime = _open_onnx(path, threads)
    else:
        raise CnnlabError(
            f"'{path}' is neither an ONNX model (.onnx) nor a TorchScript file; "
            "give a run folder or a file written by cnnlab export"
        )
    preprocess = Preprocess.from_json(meta["preprocess"], str(path))
    return Served(model, list(meta["class_names"]), preprocess, runtime, path, for_command(threads))


def open_runtime(
    files: RunFiles, runtime: str, threads: int = DEFAULT_THREADS, trained: TrainedModel | None = None
) -> Served:
    """One runtime of a run: ``pytorch`` (the checkpoint) or one of its exported artifacts.

    Raises:
        CnnlabError: when that artifact has not been made (naming the command that makes it).
    """
    if runtime == "pytorch":
        trained = trained or load_trained(files)
        # NHWC: the faster eager layout for conv nets on this CPU (run_batches feeds NHWC input to it);
        # on a copy, so the caller's model keeps its layout (the ONNX exporter wants NCHW).
        model = copy.deepcopy(trained.model).to(memory_format=torch.channels_last)
        return Served(model, trained.class_names, trained.preprocess, runtime, files.root, for_command(threads))
    path = artifact_path(files, runtime)
    if path is None:
        raise CnnlabError(f"unknown runtime '{runtime}'; choose from {', '.join(RUNTIMES)}")
    if not path.is_file():
        make = {"int8": "cnnlab quantize", "torchscript": "cnnlab export --format torchscript"}.get(
            runtime, "cnnlab export"
        )
        raise CnnlabError(f"run '{files.root}' has no {path.name} yet; make it with: {make} {files.root}")
    return open_artifact(path, threads)


def read_sidecar(files: RunFiles) -> dict[str, Any]:
    """``model.json``: metadata, what was checked of each artifact, and measured speeds ({} if none)."""
    return read_optional_json(files.deploy_meta)


def update_sidecar(
    files: RunFiles, trained: TrainedModel, artifacts: dict[str, Any] | None = None, speed: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Records artifact facts and measured speeds in ``model.json`` (merged with what is there)."""
    sidecar = read_sidecar(files)
    sidecar.update(model_metadata(trained, files))
    sidecar.setdefault("artifacts", {}).update(artifacts or {})
    if speed:
        sidecar["speed"] = speed
    atomic_write_json(files.deploy_meta, sidecar)
    if artifacts:  # a tracked run's MLflow run gets the model files it now has
        log_model_files(files, trained.record, [files.root / name for name in artifacts] + [files.deploy_meta])
    return sidecar


def _measured(files: RunFiles, latency: dict[str, Any]) -> dict[str, float]:
    """Measured batch-1 latency (ms) of each runtime the run still has."""
    present = {}
    for runtime, ms in latency.items():
        path = artifact_path(files, runtime)
        if runtime in RUNTIMES and (path is None or path.is_file()) and isinstance(ms, (int, float)):
            present[runtime] = float(ms)
    return present


def _int8_drop(accuracy: dict[str, Any]) -> float | None:
    """Test accuracy INT8 loses against the checkpoint (fraction), None when either is unmeasured."""
    int8, reference = accuracy.get("int8"), accuracy.get("pytorch")
    return None if int8 is None or reference is None else float(reference) - float(int8)


def fastest_runtime(files: RunFiles, choice: str = "auto") -> tuple[str, str]:
    """(runtime, why) for predicting with a run, as ``--runtime auto`` or ``fastest`` picks it.

    ``auto``: the fastest measured runtime with the checkpoint's own outputs (``EXACT_RUNTIMES``), so
    a prediction is the one the report, ``evaluate`` and Grad-CAM show; ``fastest``: INT8 too when
    it keeps test accuracy (within ``ACCURACY_TOLERANCE``). Unmeasured: ONNX FP32 if exported, else
    PyTorch. ``why`` says when INT8 would have been faster and how to ask for it.
    """
    speed = read_sidecar(files).get("speed") or {}
    measured = _measured(files, speed.get("latency_ms") or {})
    drop = _int8_drop(speed.get("accuracy") or {})
    int8_kept = drop is not None and drop <= ACCURACY_TOLERANCE
    allowed = {
        r: ms
        for r, ms in measured.items()
        if r in EXACT_RUNTIMES or (choice == "fastest" and r == "int8" and int8_kept)
    }
    if not allowed:
        if files.onnx.is_file():
            return "onnx", "exported, not timed yet (cnnlab benchmark RUN measures every runtime)"
        return "pytorch", "no exported model (cnnlab export RUN makes a faster one)"
    best = min(allowed, key=allowed.__getitem__)
    slowest = measured.get("pytorch")
    vs = f", PyTorch eager {slowest:.2f} ms" if slowest is not None and best != "pytorch" else ""
    why = f"fastest measured by {speed.get('measured_by', 'cnnlab')}: {allowed[best]:.2f} ms per image{vs}"
    int8_ms = measured.get("int8")
    if best != "int8" and int8_ms is not None and int8_ms < allowed[best] and drop is not None:
        change = f"{-100 * drop:+.1f} points of test accuracy"
        why += (
            f"; INT8 is faster ({int8_ms:.2f} ms, {change}) but changes the outputs: --runtime fastest or int8 uses it"
            if int8_kept
            else f"; INT8 ({int8_ms:.2f} ms) is left out: {change}"
        )
    return best, why


def open_for_prediction(
    target: str | Path, runtime: str = "auto", threads: int = DEFAULT_THREADS
) -> tuple[Served, str]:
    """A run folder (the runtime ``auto``/``fastest`` picks, or ``runtime``) or an artifact file; and why it was chosen.

    Raises:
        CnnlabError: an unknown runtime, a runtime given with an artifact file, a missing artifact.
    """
    if runtime not in RUNTIME_CHOICES:
        raise CnnlabError(f"unknown runtime '{runtime}'; choose from {', '.join(RUNTIME_CHOICES)}")
    path = Path(target).expanduser()
    if path.is_file():
        if runtime != "auto":
            raise CnnlabError(f"--runtime applies to a run folder; '{path}' is already one artifact")
        return open_artifact(path, threads), "the file given"
    files = open_run(path)
    if runtime in ("auto", "fastest"):
        runtime, why = fastest_runtime(files, runtime)
    else:
        why = "asked for with --runtime"
    return open_runtime(files, runtime, threads), why
