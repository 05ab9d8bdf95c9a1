"""The run configuration: one frozen dataclass per section, each field declared once with its help.

Building a section checks it (``__post_init__``), so a config from flags, from YAML or from a
Python call is held to the same rules with the same messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from cnnlab.config.augment import AugmentConfig
from cnnlab.config.schema import POSITIONAL, check_fields, option
from cnnlab.config.split_spec import SplitSpec
from cnnlab.errors import CnnlabError

Sampler = Literal["shuffle", "balanced"]
ImageStore = Literal["auto", "memory", "disk"]
# --image-store auto keeps a folder on disk from this decoded size on. The in-memory path peaks at about
# twice the decoded size plus torch's ~0.8 GB (bench/bench_bigdata.py: 6.9 GB for 3.2 GB of 224-px
# images), so from 1 GiB on a run would pass 3 GB; below it the store saves little.
DISK_MIN_BYTES = 2**30
Head = Literal["default", "linear", "lesson", "production"]
BinaryHead = Literal["softmax", "sigmoid"]
Stages = Literal["auto", "frozen", "both", "full"]
ClassWeights = Literal["none", "auto"]
Optimizer = Literal["adam", "adamw", "sgd"]
Scheduler = Literal["plateau", "onecycle", "cosine", "linear", "none"]
Select = Literal["accuracy", "loss"]
Refit = Literal["auto", "on", "off"]
# --refit auto refits pretrained runs below this many train + val images: there --val-split auto holds
# out more than a tenth of them (a quarter below 400), and the refit's stages cost seconds on cached
# features (bench/bench_refit.py). Above it a tenth is held out and the refit would repeat minutes of training.
REFIT_MAX_IMAGES = 1000
Accelerator = Literal["auto", "cpu", "cuda", "gpu", "mps"]
Precision = Literal["auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "64-true"]
# Lightning's names. ddp starts one process per device (re-running the command, or found started by
# torchrun/SLURM); ddp_spawn starts them with multiprocessing; the third is ddp for models with
# parameters that some steps leave unused (DDP refuses those otherwise). Frozen ones are not a reason.
Strategy = Literal["auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true"]
Channels = Literal[1, 3]
# How a photo becomes the stored square, timm's eval crop_mode: center (shorter side fits, the long
# side's ends are cut), squash (the whole photo resized to the square, aspect not kept), border
# (the longer side fits, the rest padded with the normalisation's mean, i.e. zero after it).
CropMode = Literal["center", "squash", "border"]
Tracking = Literal["off", "mlflow"]


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how they are split and sized."""

    source: str = option(
        "mnist-sample",
        "image folder, CSV listing (path,label[,split]), or built-in set (mnist-sample, digits, ...)",
        flag=POSITIONAL,
        dest="data",
    )
    image_size: int | None = option(
        None, "side in px (default: the data's own size, or the model's)", at_least=8, at_most=4096
    )
    channels: Channels | None = option(None, "1 (grayscale) or 3 (RGB) (default: from the data, or the model's)")
    # Stored squares are made by --crop-mode (default: shorter side resized, long side's ends cut).
    crop_pct: float | None = option(
        None,
        "the model sees the centre PCT of each stored image: photos are stored at "
        "image size / PCT, evaluated on the centre crop, trained (with augmentation) on "
        "random crops; 1 stores the model's input itself (default: the pretrained "
        "model's own, timm's crop_pct, e.g. 0.875; else 1)",
        metavar="PCT",
        at_least=0.5,
        at_most=1,
    )
    crop_mode: CropMode = option(
        "center",
        "how a photo becomes the stored square (timm's crop_mode): center fits the shorter side "
        "and cuts the long side's ends; squash resizes the whole photo to the square (aspect not "
        "kept); border fits the longer side and pads the rest with the model's mean. --crop-pct "
        "still applies after it, as in timm: the model sees the centre PCT of the square (add "
        "--crop-pct 1 to show it the whole photo)",
    )
    val_split: str = option(
        "auto",
        metavar="SIZE",
        help="validation size: a fraction of all images (0.1), a count "
        "(500), last:N (the lesson's MNIST split), or auto: a tenth, but at least 100 images up "
        "to a quarter of a small set",
    )
    test_split: str = option(
        "0.1", metavar="SIZE", help="test size, as --val-split; used only when the data has no test split"
    )
    batch_size: int = option(128, "images per training batch (the lesson's 128)", at_least=1)
    workers: int = option(4, "threads (or processes) decoding image files", at_least=1)
    sampler: Sampler = option("shuffle", "batch order: shuffle, or balanced (every class drawn equally often)")
    image_store: ImageStore = option(
        "auto",
        "where a folder's decoded images live: memory; disk (a file in the "
        "cache folder read batch by batch: memory holds a batch, not the data, and "
        "processes share the OS page cache); auto: disk when the decoded images "
        f"pass {DISK_MIN_BYTES / 2**30:g} GiB",
    )

    def __post_init__(self) -> None:
        check_fields(self, "data")
        if not self.source.strip():
            raise CnnlabError("no data given; name an image folder or a built-in set (cnnlab train mnist-sample)")
        SplitSpec.parse(self.val_split, "--val-split")
        SplitSpec.parse(self.test_split, "--test-split")


@dataclass(frozen=True)
class ModelConfig:
    """Which network, and where its starting weights come from."""

    name: str = option(
        "simple_cnn",
        "simple_cnn (the lesson's), fast_cnn, a timm name, or a Keras name (resnet50, mobilenetv2, ...)",
        dest="model",
    )
    pretrained: bool = option(False, "start from ImageNet weights (built in for efficientnet_lite0, else the hub)")
    weights: str | None = option(
        None, "a local .safetensors/.pth state dict to start from (never unpickled)", metavar="FILE"
    )
    dropout: float = option(0.5, "dropout before the last layer (the lesson's 0.5)", at_least=0, below=1)
    head: Head = option(
        "default",
        "classifier head: the model's own; linear; lesson (GAP-Dense256-Dropout0.5); "
        "production (GAP-BN-Dense512-Dense256)",
    )
    binary_head: BinaryHead = option(
        "softmax", "two-class tasks: softmax (2 outputs) or sigmoid (1 output, the lesson's binary way)"
    )

    def __post_init__(self) -> None:
        check_fields(self, "model")
        if not self.name.strip():
            raise CnnlabError("--model is empty; name a model (cnnlab models list)")


@dataclass(frozen=True)
class TransferConfig:
    """Two-stage transfer learning: train the head on a frozen base, then fine-tune its top."""

    stages: Stages = option(
        "auto",
        "auto: frozen then fine-tune when pretrained, else full; frozen: stage 1 "
        "only; both; full: everything trains from the start",
    )
    # Stage 2's defaults (issue #20): the lesson's 10 layers at 1e-5 changed test accuracy by 0 to
    # -0.7 points on four photo sets; in a search on dtd10 (bench/finetune_search.py, chosen on
    # validation loss) the last 3 blocks on one-cycle for 5 epochs was the best candidate. As whole
    # commands its 3e-4 peak raised validation loss at the peak on all three sets measured; the kept
    # model's validation loss at 1e-4 vs 3e-4: dtd10 the same (stage 1 kept by both), imagenette_500
    # 0.0351 vs 0.0349, cifar10_500 0.904 vs 0.932 (BENCHMARKS.md, "Fine-tuning that pays for
    # itself", which also shows the test gain is not there yet). Each epoch runs only the unfrozen top on
    # cached activations. Stage 2 is chosen and kept on validation accuracy (cnnlab.training.selection):
    # on dtd10 it raised validation accuracy from 81 to 84-86% while its loss rose, so the loss rule
    # kept stage 1.
    frozen_epochs: int | None = option(
        None,
        "stage 1 epochs; 0 skips it (default: 50 on cached features, else --epochs; early stopping may end it sooner)",
        at_least=0,
    )
    finetune_epochs: int | None = option(5, "stage 2 epochs; 0 skips it; none: --epochs", at_least=0)
    finetune_blocks: int = option(
        3, "stage 2 unfreezes the backbone's last K blocks, by the model's own structure", at_least=1
    )
    finetune_layers: int | None = option(
        None, "or the last N layers with weights instead (the lesson's 10)", at_least=0
    )
    finetune_lr: float = option(1e-4, "stage 2 peak learning rate (the lesson's: 1e-5)", above=0)
    finetune_scheduler: Scheduler = option(
        "onecycle",
        "stage 2 schedule: onecycle (warm-up, then cosine decay), cosine, linear (as --scheduler), plateau "
        "(the lesson's) or none",
    )
    finetune_select: Select = option(
        "accuracy",
        "how stage 2's epoch is chosen, and whether it replaces stage 1's "
        "model, on validation: accuracy (more images right: by more than one, or by one "
        "with a lower loss) or loss (a lower loss)",
    )
    layer_decay: float | None = option(
        None, "LR multiplier per block going down, e.g. 0.75 (default off)", above=0, at_most=1
    )
    feature_cache: bool = option(True, "frozen stage: compute backbone features once, then train only the head")
    refit: Refit = option(
        "auto",
        "once the stages have chosen their epochs on validation, train again on train + "
        "val with those epochs, so the final model has seen every labelled image (its "
        "validation figures then mean nothing: test counts); auto: pretrained runs on fewer "
        f"than {REFIT_MAX_IMAGES:,} train + val images",
    )

    def __post_init__(self) -> None:
        check_fields(self, "transfer")


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation and its callbacks; defaults are the lesson's Keras values."""

    epochs: int = option(15, "at most this many epochs (the lesson's 15)", at_least=1)
    # auto: Lightning's learning-rate range test on the first stage's own module and data (cnnlab.training.lr_finder).
    lr: float | Literal["auto"] = option(
        1e-3,
        "learning rate (Adam's step size; the lesson's 1e-3); auto: run "
        "the learning-rate finder first and train at its pick (recorded in "
        "config.yaml, run.json and the report)",
        above=0,
    )
    weight_decay: float = option(0.0, "L2 weight decay (decoupled for adamw)", at_least=0)
    patience: int = option(5, "early stopping: epochs without a better val_loss (best weights restored)", at_least=1)
    lr_patience: int = option(3, "ReduceLROnPlateau: flat epochs before the LR drops", at_least=0)
    lr_factor: float = option(0.5, "ReduceLROnPlateau: LR multiplier at each drop", above=0, below=1)
    min_lr: float = option(1e-7, "ReduceLROnPlateau: the LR floor", at_least=0)
    class_weights: ClassWeights = option("none", "auto: weigh the loss by inverse class frequency")
    optimizer: Optimizer = option("adam", "adam (the lesson's), adamw, or sgd (Nesterov momentum)")
    scheduler: Scheduler = option(
        "plateau",
        "plateau: ReduceLROnPlateau on val_loss (the lesson's); onecycle (warm-up, then cosine decay), cosine "
        "and linear (airbench's: from 0.2x up to the rate over the first 23 percent of the steps, then "
        "straight down to 0.07x) step every batch",
    )
    momentum: float = option(0.9, "SGD momentum", at_least=0, below=1)
    ema: float = option(
        0.0,
        "keep an exponential moving average of the weights with this decay per step "
        "(e.g. 0.99), validated, checkpointed and kept at the end; 0: off",
        at_least=0,
        below=1,
    )
    lookahead: int = option(
        0,
        "wrap the optimiser in Lookahead (timm's): every K steps a slow copy of the weights moves "
        "--lookahead-alpha of the way towards where the optimiser took them, and training continues "
        "from it; 0: off (airbench: 5)",
        metavar="K",
        at_least=0,
    )
    lookahead_alpha: float = option(
        0.5, "the fraction of the way Lookahead's slow weights move every K steps", above=0, at_most=1
    )
    time_budget: float | None = option(
        None,
        "seconds of training for the whole run, all stages and resumes included; schedules fit inside it",
        metavar="SECONDS",
        above=0,
    )
    # NHWC memory layout: same results, faster training steps here (BENCHMARKS.md): simple_cnn 1.3x,
    # fast_cifar 1.5x, fast_cnn 2x, EfficientNet-Lite0 fine-tuning 1.5x.
    channels_last: bool = option(True, "NHWC memory layout (1.3-2x faster conv training on this CPU, same results)")
    compile: bool = option(False, "torch.compile the model (off: it measured no faster on a CPU)")
    threads: int = option(
        0,
        "torch threads on the CPU; 0 = auto: the cores other work leaves free (sampled at "
        "the start), at least 1 (a busy second thread measured 2-5x slower)",
        at_least=0,
    )
    seed: int = option(42, "seed of the split, the initial weights and every random draw")
    deterministic: bool = option(False, "bit-identical results on the same machine (a little slower)")
    accelerator: Accelerator = option("auto", "where to train: auto picks a GPU when there is one")
    devices: str = option(
        "auto", metavar="N|LIST", help="how many devices (2) or which (0,1); auto: all of the accelerator's"
    )
    precision: Precision = option(
        "auto",
        "auto: bf16-mixed on CUDA with bf16, 16-mixed on other GPUs, 32-true "
        "on a CPU; bf16-mixed on a CPU without native bf16 falls back to 32-true",
    )
    strategy: Strategy = option(
        "auto",
        "how several devices train together: auto (ddp when there are several), "
        "ddp (one process per device), ddp_spawn, ddp_find_unused_parameters_true",
    )
    num_nodes: int = option(
        1,
        "machines training together (each runs the same command, e.g. under torchrun or SLURM; README: Scaling out)",
        at_least=1,
    )
    batch_per_device: bool = option(
        False,
        "with several processes each takes --batch-size (the global batch "
        "grows; --lr is not scaled) instead of sharing it",
    )

    def __post_init__(self) -> None:
        check_fields(self, "train")


@dataclass(frozen=True)
class RunConfig:
    """Everything a training run needs; saved as the run folder's ``config.yaml``."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    name: str | None = option(None, "run folder name (default: <model>-<data>, numbered if taken)")
    runs_dir: str = option("runs", "where run folders go", metavar="DIR")
    # The run folder stays the record every command reads; a tracker is a copy a team can browse.
    tracking: Tracking = option(
        "off",
        "also record the run in an experiment tracker: mlflow (the options, each "
        "epoch's metrics, test scores, report, figures and exported models; needs the "
        "track extra)",
    )
    tracking_uri: str | None = option(
        None,
        "the MLflow store or server, e.g. http://mlflow.example:5000 (default: "
        "sqlite:///<runs-dir>/mlflow.db, beside the run folders)",
        metavar="URI",
    )

    def __post_init__(self) -> None:
        check_fields(self, None)
        name = self.name
        if name is not None and ("/" in name or "\\" in name or name.strip() in ("", ".", "..")):
            raise CnnlabError(f"--name must be a plain folder name, got '{name}'")
        if self.tracking_uri is not None and not self.tracking_uri.strip():
            raise CnnlabError("--tracking-uri is empty; give a store (sqlite:///path/mlflow.db) or a server URL")
        if self.tracking_uri is not None and self.tracking == "off":  # else nothing would be tracked, silently
            raise CnnlabError("--tracking-uri names where to track, but tracking is off; add --tracking mlflow")


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "augment": AugmentConfig,
    "train": TrainConfig,
    "transfer": TransferConfig,
}
