"""``cnnlab train``: flags become a config; one call trains, evaluates and reports."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path
from typing import Any

from cnnlab.cli.augment_cmd import add_augment_arguments, augment_config_from_args, augment_overrides_from_args
from cnnlab.cli.parser import positive_float, positive_int
from cnnlab.config import RunConfig, load_yaml, merge_config

# flag dest -> (config section, field); None section = top level
FLAG_FIELDS: dict[str, tuple[str | None, str]] = {
    "data": ("data", "source"),
    "image_size": ("data", "image_size"),
    "channels": ("data", "channels"),
    "val_split": ("data", "val_split"),
    "test_split": ("data", "test_split"),
    "batch_size": ("data", "batch_size"),
    "workers": ("data", "workers"),
    "sampler": ("data", "sampler"),
    "model": ("model", "name"),
    "pretrained": ("model", "pretrained"),
    "weights": ("model", "weights"),
    "dropout": ("model", "dropout"),
    "epochs": ("train", "epochs"),
    "lr": ("train", "lr"),
    "weight_decay": ("train", "weight_decay"),
    "patience": ("train", "patience"),
    "lr_patience": ("train", "lr_patience"),
    "lr_factor": ("train", "lr_factor"),
    "min_lr": ("train", "min_lr"),
    "class_weights": ("train", "class_weights"),
    "seed": ("train", "seed"),
    "deterministic": ("train", "deterministic"),
    "accelerator": ("train", "accelerator"),
    "devices": ("train", "devices"),
    "precision": ("train", "precision"),
    "optimizer": ("train", "optimizer"),
    "scheduler": ("train", "scheduler"),
    "momentum": ("train", "momentum"),
    "time_budget": ("train", "time_budget"),
    "channels_last": ("train", "channels_last"),
    "compile": ("train", "compile"),
    "head": ("model", "head"),
    "binary_head": ("model", "binary_head"),
    "stages": ("transfer", "stages"),
    "frozen_epochs": ("transfer", "frozen_epochs"),
    "finetune_epochs": ("transfer", "finetune_epochs"),
    "finetune_layers": ("transfer", "finetune_layers"),
    "finetune_blocks": ("transfer", "finetune_blocks"),
    "finetune_lr": ("transfer", "finetune_lr"),
    "layer_decay": ("transfer", "layer_decay"),
    "feature_cache": ("transfer", "feature_cache"),
    "name": (None, "name"),
    "runs_dir": (None, "runs_dir"),
}


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train",
        help="train a CNN on an image folder or a built-in data set",
        description="Train, evaluate on the test split, and write runs/<name>/ with a report.",
    )
    p.add_argument("data", nargs="?", help="image folder, CSV listing, or built-in set (mnist-sample, digits, ...)")
    p.add_argument("--resume", metavar="RUN", help="continue a stopped run from its last checkpoint")
    add_run_arguments(p)
    p.set_defaults(func=run)
    return p


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """Every option of a training run (shared by ``train`` and the experiments)."""
    p.add_argument("--recipe", help="a named setup (cnnlab recipes list): lesson, fast, fast-cifar")
    p.add_argument("--config", type=Path, help="YAML file of options (flags override it)")
    p.add_argument("--name", help="run folder name (default <model>-<data>, numbered if taken)")
    p.add_argument("--runs-dir", dest="runs_dir", help="where run folders go (default runs)")
    m = p.add_argument_group("model")
    m.add_argument("--model", help="simple_cnn, a timm name, or a Keras name (resnet50, mobilenetv2, ...)")
    m.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=None, help="start from ImageNet weights")
    m.add_argument("--weights", help="local .safetensors/.pth state dict to start from")
    m.add_argument("--dropout", type=float, help="dropout before the last layer (default 0.5)")
    d = p.add_argument_group("data")
    d.add_argument("--image-size", dest="image_size", type=positive_int, help="side in px (default: the data's or the model's)")
    d.add_argument("--channels", type=int, choices=(1, 3), help="1 (grayscale) or 3 (RGB); default from the data")
    d.add_argument("--val-split", dest="val_split", help="0.1 (fraction), 500 (count) or last:10000")
    d.add_argument("--test-split", dest="test_split", help="as --val-split, when the data has no test/")
    d.add_argument("--batch-size", dest="batch_size", type=positive_int, help="default 128")
    d.add_argument("--workers", type=positive_int, help="decoding threads (default 4)")
    d.add_argument("--sampler", choices=("shuffle", "balanced"), help="balanced: every class equally often")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=positive_int, help="at most this many (default 15)")
    t.add_argument("--lr", type=positive_float, help="learning rate (default 1e-3, Adam)")
    t.add_argument("--weight-decay", dest="weight_decay", type=float)
    t.add_argument("--patience", type=positive_int, help="early stopping on val_loss (default 5)")
    t.add_argument("--lr-patience", dest="lr_patience", type=positive_int, help="ReduceLROnPlateau patience (default 3)")
    t.add_argument("--lr-factor", dest="lr_factor", type=positive_float, help="ReduceLROnPlateau factor (default 0.5)")
    t.add_argument("--min-lr", dest="min_lr", type=float, help="ReduceLROnPlateau floor (default 1e-7)")
    t.add_argument("--class-weights", dest="class_weights", choices=("none", "auto"), help="auto: inverse frequency")
    t.add_argument("--seed", type=int, help="default 42")
    t.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=None,
                   help="bit-identical results on the same machine")
    t.add_argument("--accelerator", help="cpu, cuda, mps or auto")
    t.add_argument("--devices", help="number or list of devices (default auto)")
    t.add_argument("--precision", help="32-true, bf16-mixed, 16-mixed or auto")
    t.add_argument("--optimizer", choices=("adam", "adamw", "sgd"), help="default adam (the lesson's)")
    t.add_argument("--scheduler", choices=("plateau", "onecycle", "cosine", "none"),
                   help="plateau: ReduceLROnPlateau (default); onecycle/cosine step per batch")
    t.add_argument("--momentum", type=float, help="SGD momentum (default 0.9)")
    t.add_argument("--time-budget", dest="time_budget", type=positive_float, metavar="SECONDS",
                   help="stop at the best point reachable within this much training time")
    t.add_argument("--channels-last", dest="channels_last", action=argparse.BooleanOptionalAction, default=None,
                   help="NHWC memory layout (default on: 1.3-2x faster conv training here, same results)")
    t.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the model (default off: it measured no faster on CPU)")
    x = p.add_argument_group("transfer learning")
    x.add_argument("--head", choices=("default", "linear", "lesson", "production"),
                   help="lesson: GAP-Dense256-Dropout0.5; production: GAP-BN-Dense512-Dense256")
    x.add_argument("--binary-head", dest="binary_head", choices=("softmax", "sigmoid"),
                   help="two-class tasks: sigmoid gives one output, as the lesson")
    x.add_argument("--stages", choices=("auto", "frozen", "both", "full"),
                   help="auto: frozen then fine-tune when pretrained (default)")
    x.add_argument("--frozen-epochs", dest="frozen_epochs", type=positive_int,
                   help="stage 1 epochs (default 50 on cached features, else --epochs; early stopping may end it)")
    x.add_argument("--finetune-epochs", dest="finetune_epochs", type=positive_int,
                   help="stage 2 epochs (default 3: about a minute per 1,000 images at 224 px on 2 CPU cores)")
    x.add_argument("--finetune-layers", dest="finetune_layers", type=int, help="unfreeze the last N layers (default 10)")
    x.add_argument("--finetune-blocks", dest="finetune_blocks", type=positive_int, help="or the last K blocks")
    x.add_argument("--finetune-lr", dest="finetune_lr", type=positive_float, help="stage 2 learning rate (default 1e-5)")
    x.add_argument("--layer-decay", dest="layer_decay", type=positive_float, help="layer-wise LR decay, e.g. 0.75")
    x.add_argument("--feature-cache", dest="feature_cache", action=argparse.BooleanOptionalAction, default=None,
                   help="frozen stage: compute backbone features once (default on)")
    add_augment_arguments(p)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Defaults, then ``--recipe``, then ``--config`` YAML, then the flags given on the command line."""
    config = RunConfig()
    if getattr(args, "recipe", None):
        from cnnlab.train.recipes import apply_recipe

        config = apply_recipe(config, args.recipe)
    if args.config is not None:
        config = merge_config(config, load_yaml(args.config), where=str(args.config))
    updates: dict[str, Any] = {}
    for dest, (section, field) in FLAG_FIELDS.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        if section is None:
            updates[field] = value
        else:
            updates.setdefault(section, {})[field] = value
    config = merge_config(config, updates, where="the command line")
    if getattr(args, "augment", None) is not None:
        config = dataclasses.replace(config, augment=augment_config_from_args(args))
    elif augment_overrides_from_args(args):
        config = dataclasses.replace(
            config, augment=dataclasses.replace(config.augment, **augment_overrides_from_args(args))
        )
    return config


def run(args: argparse.Namespace) -> int:
    from cnnlab.config import validate
    from cnnlab.errors import CnnlabError
    from cnnlab.evaluate.run import train_and_evaluate
    from cnnlab.train.fit import TrainingInterrupted

    command = "cnnlab " + shlex.join(sys.argv[1:])
    if args.resume:
        given = [dest for dest in FLAG_FIELDS if getattr(args, dest, None) is not None]
        if given or args.config or args.recipe or augment_overrides_from_args(args) or getattr(args, "augment", None):
            raise CnnlabError("--resume continues a run with its saved options; drop the other options")
        config = None
    else:
        if args.data is None:
            raise CnnlabError("no data given; e.g. cnnlab train mnist-sample, or --resume runs/<name>")
        config = config_from_args(args)
        validate(config)
    try:
        files, metrics = train_and_evaluate(config, command, resume_path=args.resume)
    except TrainingInterrupted as stop:
        root = stop.result.files.root
        print(f"\ninterrupted: the last finished epoch is saved; report: {root / 'report.html'}")
        print(f"resume with: cnnlab train --resume {root}")
        return 130
    print(f"\ntest accuracy {metrics['accuracy']:.2%}  loss {metrics['loss']:.4f}")
    print(f"run folder: {files.root}")
    print(f"report:     {files.report}")
    return 0
