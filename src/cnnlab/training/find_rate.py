"""``cnnlab lr-find``: the learning-rate finder alone, on exactly what ``cnnlab train`` would train.

The same data (split, decoding, margin), augmentation, model and first stage as a run with the
same options: for a pretrained run that is stage 1, the head on cached backbone features, whose
rate ``--lr`` sets. Nothing is trained for real: the finder restores the module it tested.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cnnlab.config import RunConfig
from cnnlab.training.lr_finder import END_LR, START_LR, STEPS, LrFinding, find_lr
from cnnlab.training.optim import apply_speedups, apply_threads
from cnnlab.training.record import ModelRecord, RunRecord
from cnnlab.training.run_dir import ResultFiles, RunFiles, claim_folder, default_name
from cnnlab.training.run_fit import _module_kwargs
from cnnlab.training.stage_fit import prepare_stage
from cnnlab.training.stage_plan import plan_stages
from cnnlab.training.start import RunContext, prepare_inputs


def default_out(config: RunConfig) -> Path:
    """``lr-find/<model>-<data>`` (numbered when taken)."""
    return Path("lr-find") / default_name(config)


def find_rate(
    config: RunConfig,
    out: str | Path | None = None,
    steps: int = STEPS,
    start_lr: float = START_LR,
    end_lr: float = END_LR,
) -> tuple[LrFinding, ResultFiles]:
    """Runs the finder on the first stage a run of ``config`` would train; writes lr_find.png and lr_find.json.

    Returns:
        The finding and the folder it was written to (``out``, or a new ``lr-find/<model>-<data>``).

    Raises:
        CnnlabError: bad data or options (as ``cnnlab train`` would say), or a curve without a pick.
    """
    apply_threads(config.train)
    data, preprocess, model, _ = prepare_inputs(config)
    if out is None:
        root = claim_folder(default_out(config).parent, default_out(config).name, "lr-find", "--out")
    else:
        root = Path(out).expanduser()
        root.mkdir(parents=True, exist_ok=True)
    record = RunRecord(class_names=data.class_names, preprocess=preprocess, model=ModelRecord(name=config.model.name))
    ctx = RunContext(config, RunFiles(root), data, model, record)
    apply_speedups(model, config.train)
    stage = plan_stages(config, config.model.pretrained or bool(config.model.weights), warn=False)[0]
    inputs = prepare_stage(ctx, dataclasses.replace(stage, lr="auto"), _module_kwargs(ctx))
    finding = find_lr(inputs.module, inputs.datamodule, inputs.train_cfg, stage.name, root, steps, start_lr, end_lr)
    files = ResultFiles(root)
    finding.save(files.lr_find_curve, files.figure("lr_find"))
    return finding, files


__all__ = ["default_out", "find_rate"]
