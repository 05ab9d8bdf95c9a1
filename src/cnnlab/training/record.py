"""run.json as types: what a run was, did and kept, read and written through dataclasses.

``RunRecord.from_json`` reads any run.json cnnlab wrote, older ones included: a missing section
takes its default (an empty timing, no refit, no attempts), and keys this version does not know
stay in each record's ``extra``, written back as they were. ``to_json`` gives back the dict cnnlab
writes: the same keys, values and order, so reading a run folder and saving it again changes
nothing (tests/training/test_record.py checks a folder written by today's code).

How a record is written: a record built in Python writes every field but the ``OPTIONAL`` ones
at their default (a stage without a time budget has no ``budget_seconds``); a record read from a
file writes the keys the file had, in its order, plus every field changed since, so an older
run.json gains no key it did not have. Sections owned elsewhere and read by one command each
stay plain mappings: ``tracking`` (training.tracking's MLflow record), ``distillation``,
``distillation_baseline`` and ``pruning`` (the deploy commands').
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from types import UnionType
from typing import Any, ClassVar, TypeVar, Union, cast, get_args, get_origin, get_type_hints

from cnnlab.data.preprocess import Preprocess

R = TypeVar("R", bound="Record")
_BASE = ("extra", "keys")


def _dump(value: Any) -> Any:
    """A field's JSON value: nested records as their dicts, containers copied."""
    if isinstance(value, (Record, Preprocess)):
        return value.to_json()
    if isinstance(value, list):
        return [_dump(item) for item in value]
    if isinstance(value, dict):
        return {key: _dump(item) for key, item in value.items()}
    return value


def _is_record(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, (Record, Preprocess))


def _loader(hint: Any) -> Callable[[Any], Any] | None:
    """How a field of type ``hint`` is read from JSON: a record, a list, a mapping or an optional one of
    them (items that are not JSON objects are dropped); None for plain values, kept as they are."""
    args = get_args(hint)
    if _is_record(hint):
        return cast(Callable[[Any], Any], hint.from_json)
    if get_origin(hint) is list and _is_record(args[0]):
        return lambda raw: [args[0].from_json(item) for item in raw or [] if isinstance(item, Mapping)]
    if get_origin(hint) is dict and _is_record(args[1]):
        return lambda raw: {
            str(key): args[1].from_json(value)
            for key, value in (raw.items() if isinstance(raw, Mapping) else [])
            if isinstance(value, Mapping)
        }
    inner = [arg for arg in args if arg is not type(None)]
    if get_origin(hint) in (Union, UnionType) and len(inner) == 1 and _is_record(inner[0]):
        return lambda raw: inner[0].from_json(raw) if isinstance(raw, Mapping) else None
    return None


_LOADERS: dict[type, dict[str, Callable[[Any], Any]]] = {}


def _loaders(kind: type) -> dict[str, Callable[[Any], Any]]:
    """The fields of record type ``kind`` that hold records, and how each is read (from its annotations)."""
    if kind not in _LOADERS:
        hints = get_type_hints(kind)
        found = {spec.name: _loader(hints[spec.name]) for spec in fields(kind) if spec.name not in _BASE}
        _LOADERS[kind] = {name: load for name, load in found.items() if load is not None}
    return _LOADERS[kind]


def _default(spec: Field[Any]) -> Any:
    if spec.default is not MISSING:
        return spec.default
    return spec.default_factory() if spec.default_factory is not MISSING else MISSING


@dataclass(kw_only=True)
class Record:
    """One JSON object of run.json. ``extra``: keys this version does not know; ``keys``: the order the
    file had (None: built in Python, written in field order)."""

    OPTIONAL: ClassVar[frozenset[str]] = frozenset()  # fields written only when set (new records)
    WRITTEN_WITH: ClassVar[dict[str, str]] = {}  # field -> the field whose being set writes it too

    extra: dict[str, Any] = field(default_factory=dict, repr=False)
    keys: tuple[str, ...] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_json(cls: type[R], raw: Any) -> R:
        """The record of a JSON object ({} and anything not an object give the defaults)."""
        raw = raw if isinstance(raw, Mapping) else {}
        known = {spec.name: spec for spec in fields(cls) if spec.name not in _BASE}
        values: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in raw.items():
            spec = known.get(key)
            if spec is None:
                extra[key] = value
            else:
                load = _loaders(cls).get(key)
                values[key] = load(value) if load is not None else value
        return cls(**values, extra=extra, keys=tuple(raw))

    def _set(self, spec: Field[Any]) -> bool:
        return bool(getattr(self, spec.name) != _default(spec))

    def _written(self, spec: Field[Any]) -> bool:
        changed = self._set(spec)
        partner = self.WRITTEN_WITH.get(spec.name)
        if partner is not None and self._set(next(f for f in fields(self) if f.name == partner)):
            return True
        if self.keys is not None:
            return spec.name in self.keys or changed
        return spec.name not in self.OPTIONAL or changed

    def to_json(self) -> dict[str, Any]:
        """The JSON object: the file's keys in its order, then new ones in field order."""
        out = {
            spec.name: _dump(getattr(self, spec.name))
            for spec in fields(self)
            if spec.name not in _BASE and self._written(spec)
        }
        out.update(_dump(self.extra))
        order = [key for key in self.keys or () if key in out]
        return {key: out[key] for key in [*order, *(key for key in out if key not in order)]}


@dataclass(kw_only=True)
class SplitRecord(Record):
    """One split's images: how many, per class, and a fingerprint that tells whether they changed."""

    OPTIONAL = frozenset({"fingerprint"})

    count: int = 0
    per_class: dict[str, int] = field(default_factory=dict)
    fingerprint: str | None = None


@dataclass(kw_only=True)
class DataRecord(Record):
    """``data``: where the images came from and how they were split (``PreparedData.summary``)."""

    source: str | None = None
    splits: dict[str, SplitRecord] = field(default_factory=dict)
    skipped: int = 0  # files not used (skipped_files.csv lists them)
    held_out: list[str] = field(default_factory=list)  # splits cut from train (not given as folders)

    def class_counts(self) -> dict[str, dict[str, int]]:
        """Images per class of each split."""
        return {name: dict(split.per_class) for name, split in self.splits.items() if split.per_class}


@dataclass(kw_only=True)
class ModelRecord(Record):
    """``model``: the network by the name given and the one it resolved to, and its size."""

    OPTIONAL = frozenset({"resolved", "params_total", "params_trainable"})

    name: str | None = None
    resolved: str | None = None
    params_total: int | None = None
    params_trainable: int | None = None


@dataclass(kw_only=True)
class ValScores(Record):
    """A stage's best validation epoch on its criterion (training.selection)."""

    epoch: int = 0
    loss: float | None = None
    accuracy: float | None = None
    errors: int = 0
    images: int = 0
    score: float | None = None


@dataclass(kw_only=True)
class StageRecord(Record):
    """One training stage (``frozen``, ``finetune`` or ``train``): what it trained and what it left."""

    OPTIONAL = frozenset({"budget_seconds", "done"})

    name: str = ""
    epochs: int = 0
    seconds: float = 0.0
    lr: float | str | None = None
    params_trainable: int | None = None
    params_frozen: int | None = None
    feature_cache: bool = False  # the head trained on cached backbone features
    activation_cache: str | None = None  # where the network was cut, when it trained on cached activations
    best_val_loss: float | None = None  # of the model best.ckpt holds after this stage
    select: str = "loss"  # what the stage's best epoch was chosen by (training.selection)
    val_at_best: ValScores | None = None
    stage_best_val_loss: float | None = None
    replaced_best: bool | None = None  # best.ckpt holds this stage's weights (None: not recorded, old runs)
    budget_seconds: float | None = None
    test_acc: float | None = None
    done: bool = False  # finished (an interrupted stage is on record without it)


@dataclass(kw_only=True)
class KeptRecord(Record):
    """``kept``: which stage's weights a run of several stages ended with, and why."""

    stage: str | None = None
    select: str = "loss"
    why: str = ""


@dataclass(kw_only=True)
class TimingRecord(Record):
    """``timing``: training time (every attempt's), the budget, and every phase of every attempt."""

    OPTIONAL = frozenset({"train_seconds", "budget_seconds", "evaluate_seconds", "phases", "total_seconds"})

    train_seconds: float | None = None
    budget_seconds: float | None = None
    evaluate_seconds: float | None = None
    phases: dict[str, float] = field(default_factory=dict)
    total_seconds: float | None = None


@dataclass(kw_only=True)
class AttemptRecord(Record):
    """One process's go at the run: when, where it picked up, on how many threads and processes, how it ended."""

    OPTIONAL = frozenset(
        {
            "resumed_at",
            "threads",
            "processes",
            "nodes",
            "global_batch",
            "device_batch",
            "phases",
            "total_seconds",
            "thread_changes",
            "ended",
        }
    )

    started: str = ""
    resumed_at: str | None = None
    threads: str | None = None
    processes: int | None = None  # several processes (DDP): how many, on how many machines, the batches
    nodes: int | None = None
    global_batch: int | None = None
    device_batch: int | None = None
    phases: dict[str, float] = field(default_factory=dict)
    total_seconds: float | None = None
    thread_changes: list[Any] = field(default_factory=list)
    ended: str | None = None  # trained, interrupted


@dataclass(kw_only=True)
class ChosenEpochs(Record):
    """A refit stage: the validated stage it repeats and for how many epochs."""

    stage: str = ""
    epochs: int = 0


@dataclass(kw_only=True)
class RefitStageRecord(Record):
    """One stage of the refit on train + val."""

    OPTIONAL = frozenset({"done"})

    name: str = ""
    epochs: int = 0
    seconds: float = 0.0
    lr: float | str | None = None
    schedule: str = ""
    images: int = 0
    feature_cache: bool = False
    activation_cache: bool = False
    done: bool = False


@dataclass(kw_only=True)
class RefitRecord(Record):
    """``refit``: the refit on train + val after the validated stages, or why there was none."""

    OPTIONAL = frozenset(
        {
            "line",
            "images",
            "train_images",
            "val_images",
            "chosen",
            "stages",
            "why",
            "seconds",
            "validated_checkpoint",
            "test_acc",
            "validated_test_acc",
        }
    )

    # a refit's record lists its stages from the start; its test accuracy comes with the validated model's
    WRITTEN_WITH: ClassVar[dict[str, str]] = {"chosen": "line", "stages": "line", "validated_test_acc": "test_acc"}

    line: str | None = None
    images: int | None = None
    train_images: int | None = None
    val_images: int | None = None
    chosen: list[ChosenEpochs] = field(default_factory=list)
    stages: list[RefitStageRecord] = field(default_factory=list)
    done: bool = False
    why: str | None = None  # no refit: why not
    seconds: float | None = None
    validated_checkpoint: str | None = None
    test_acc: float | None = None
    validated_test_acc: float | None = None  # the kept stage's, scored before the refit (None: not scored)


@dataclass(kw_only=True)
class MemoryRecord(Record):
    """``memory``: each process's peak resident memory in MB (rank 0's includes evaluating)."""

    peak_rss_mb: list[int] = field(default_factory=list)


@dataclass(kw_only=True)
class LrFindRecord(Record):
    """``lr_find``: the learning-rate finder's pick and how it was made (its curve is in lr_find.json)."""

    lr: float | None = None
    rule: str = ""
    stage: str = ""
    steps: int = 0
    seconds: float = 0.0
    start_lr: float | None = None
    end_lr: float | None = None
    picks: dict[str, float] = field(default_factory=dict)


@dataclass(kw_only=True)
class RunRecord(Record):
    """run.json: a run's identity, input format, data, model, stages, time, and what it kept."""

    OPTIONAL = frozenset(
        {
            "attempts",
            "refit",
            "memory",
            "kept",
            "improvement",
            "notes",
            "lr_find",
            "tracking",
            "distillation",
            "pruning",
        }
    )

    name: str | None = None
    created: str | None = None  # ISO time, to the second
    cnnlab_version: str | None = None
    command: str | None = None  # the command line that made it (the report's "reproduce")
    status: str | None = None  # running, interrupted, trained, completed (tune: pruned)
    class_names: list[str] = field(default_factory=list)
    preprocess: Preprocess | None = None
    data: DataRecord = field(default_factory=DataRecord)
    model: ModelRecord = field(default_factory=ModelRecord)
    stages: list[StageRecord] = field(default_factory=list)
    timing: TimingRecord = field(default_factory=TimingRecord)
    # (the order below is the order training first writes them)
    tracking: dict[str, Any] | None = None  # the MLflow run (training.tracking)
    notes: list[str] = field(default_factory=list)  # what the report shows in a banner
    attempts: list[AttemptRecord] = field(default_factory=list)
    lr_find: LrFindRecord | None = None
    kept: KeptRecord | None = None
    refit: RefitRecord | None = None
    memory: MemoryRecord | None = None
    improvement: str | None = None  # "improvement from fine-tuning: +1.23 points"
    distillation: dict[str, Any] | None = None  # how a distilled run was made (deploy.distill_run)
    distillation_baseline: dict[str, Any] | None = None  # the student trained alone beside it: which run, its verdict
    pruning: dict[str, Any] | None = None  # how a pruned run was made (deploy.prune_run)

    def kept_stage(self) -> StageRecord | None:
        """The stage whose weights the run ended with (best.ckpt), or None before any stage.

        run.json names it under ``kept`` when there were several stages; else the last stage that
        replaced the weights before it (``replaced_best``; old runs: every stage did).
        """
        named = self.kept.stage if self.kept is not None else None
        for stage in self.stages:
            if named is not None and stage.name == named:
                return stage
        replaced = [stage for stage in self.stages if stage.replaced_best is not False]  # old runs: every stage
        candidates = replaced or self.stages
        return candidates[-1] if candidates else None

    def done_stages(self) -> list[StageRecord]:
        return [stage for stage in self.stages if stage.done]
