"""Several processes, one run: starting them with Lightning Fabric, and only rank 0 speaking.

Lightning's Trainer trains across devices and machines (DDP), but only inside ``fit``; a cnnlab
run also decodes its data, creates its folder, extracts features and evaluates. So the processes
are started when the run starts, by Lightning Fabric: it re-runs the command once per extra local
device (``--devices 4``), spawns them (``--strategy ddp_spawn``), or finds them started by torchrun
or SLURM, and creates the process group the Trainer's fits then use. Outside ``fit`` rank 0
writes and decides (``cnnlab.training.ranks``).

Only rank 0 speaks: the other ranks' output is silenced, their errors print with their rank.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import pickle
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar, cast

from cnnlab.errors import CnnlabError
from cnnlab.training.ranks import SINGLE, Ranks, StoppedElsewhere

if TYPE_CHECKING:  # torch and Lightning load only when a run starts: the CLI imports this module for errors
    from cnnlab.config import TrainConfig

T = TypeVar("T")

# Ranks wait for rank 0 while it decodes the data, extracts features or evaluates: as Lightning's
# own barrier around prepare_data, no ordinary collective timeout (30 min) may cut that short.
WAIT_FOR_RANK_ZERO = timedelta(days=1)
_current: Ranks | None = None  # the ranks of this process once started: one process group per process


def process_rank() -> int:
    """This process's global rank, from its started group or the launcher's environment; cheap."""
    if _current is not None:
        return _current.rank
    for key in ("RANK", "SLURM_PROCID"):  # torchrun; srun (each task is one process)
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return int(os.environ.get("LOCAL_RANK", "0") or 0)  # Lightning's re-run children set only this


# --- starting the processes ------------------------------------------------------------------------


def _fabric(cfg: TrainConfig) -> Any:
    """Lightning Fabric with the run's accelerator, devices, nodes and strategy (not yet launched)."""
    from lightning.fabric import Fabric

    from cnnlab.training.trainer import quiet_lightning

    try:
        with quiet_lightning():
            return Fabric(
                accelerator=cfg.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes, strategy=cfg.strategy
            )
    except (ValueError, TypeError, RuntimeError) as exc:  # Lightning's MisconfigurationException is a ValueError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CnnlabError(
            f"--accelerator {cfg.accelerator} --devices {cfg.devices} --num-nodes {cfg.num_nodes} "
            f"--strategy {cfg.strategy}: {first}"
        ) from None


def _check_nodes_are_launched(cfg: TrainConfig, fabric: Any) -> None:
    """Several machines need a launcher (or the environment one sets); without, rank 0 would wait
    30 minutes for machines that were never asked to join."""
    from lightning.fabric.plugins.environments.lightning import LightningEnvironment

    environment = getattr(fabric.strategy, "cluster_environment", None)
    if cfg.num_nodes > 1 and type(environment) is LightningEnvironment and "NODE_RANK" not in os.environ:
        raise CnnlabError(
            f"--num-nodes {cfg.num_nodes}: start the same command on each machine, under torchrun "
            "or srun, or with MASTER_ADDR, MASTER_PORT and NODE_RANK set (README: Scaling out)"
        )


def trainer_strategy(cfg: TrainConfig) -> str:
    """The strategy the Trainer gets: its processes already run, so ddp_spawn trains as ddp."""
    return "ddp" if cfg.strategy == "ddp_spawn" else cfg.strategy


def in_processes(cfg: TrainConfig, fn: Callable[..., T], *args: Any) -> T:
    """``fn(ranks, *args)`` in every process the run's options ask for; returns rank 0's result.

    One device: runs here. Several: starts them (or joins those torchrun or SLURM started) first,
    once per process; a nested call runs in the processes already started.
    """
    if _current is not None:
        with _silenced(not _current.is_zero):
            return fn(_current, *args)
    fabric = _fabric(cfg)
    if fabric.world_size == 1:
        return fn(SINGLE, *args)
    _check_nodes_are_launched(cfg, fabric)
    from lightning.fabric.strategies.launchers.multiprocessing import _MultiProcessingLauncher
    from torch.multiprocessing.spawn import ProcessExitedException

    from cnnlab.training.trainer import quiet_lightning

    spawns = isinstance(fabric.strategy.launcher, _MultiProcessingLauncher)
    try:
        with quiet_lightning(), _ignoring_ctrl_c(spawns):  # spawned workers handle Ctrl-C; this one waits
            outcome = fabric.launch(_as_rank, _Call(fn, args), spawns)
    except ProcessExitedException as exc:
        raise CnnlabError(f"a process of the run stopped ({exc}); its messages are above") from None
    return cast(T, outcome.unwrap())


@contextlib.contextmanager
def _ignoring_ctrl_c(active: bool) -> Iterator[None]:
    if not active or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _Call:
    """A function and its arguments, as a plain object: Lightning's spawn launcher walks dataclass
    arguments to unshare tensors, and fails on frozen ones (the run config)."""

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn, self.args = fn, args

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Unpickled in a freshly spawned worker, before Lightning sets up its process group: its
        # banners ("Initializing distributed...") stay quiet there as in the process that launched it.
        for name in ("lightning.fabric", "lightning.pytorch"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self.__dict__.update(state)


class _Outcome:
    """What one rank's run gave: a value or an exception (picklable: a spawned rank 0 sends it back).

    A plain class, not a dataclass, for the same reason as :class:`_Call`."""

    def __init__(self, value: Any = None, error: BaseException | None = None) -> None:
        self.value, self.error = value, error

    def unwrap(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


def _as_rank(fabric: Any, call: _Call, spawned: bool) -> _Outcome:
    """One process's whole run, with its ranks known and, unless it is rank 0, its output silenced."""
    global _current
    import torch.distributed as dist

    if spawned:  # a spawned worker inherits the ignored Ctrl-C of the process that waits for it
        signal.signal(signal.SIGINT, signal.default_int_handler)
    ranks = Ranks(
        fabric.global_rank,
        fabric.world_size,
        fabric.local_rank,
        getattr(fabric.strategy, "num_nodes", 1),
        fabric.device,
        dist.new_group(backend="gloo", timeout=WAIT_FOR_RANK_ZERO),
    )
    _current = ranks
    # The group lives as long as the process (a second run in it reuses it) and is left at exit, so no
    # gloo thread is cut off mid-way; a spawned worker (whose exit skips atexit) leaves when it is done.
    atexit.register(_leave_process_group)
    try:
        with _silenced(not ranks.is_zero):
            return _Outcome(call.fn(ranks, *call.args))
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001  passed on whole, to be raised by the caller
        if not spawned:
            return _Outcome(error=exc)
        if ranks.is_zero:  # sent to the process that waits: it must unpickle
            return _Outcome(error=_picklable(exc))
        if not isinstance(exc, (StoppedElsewhere, KeyboardInterrupt)):
            print(rank_message(exc, ranks.rank), file=sys.stderr, flush=True)
        sys.exit(0 if isinstance(exc, (StoppedElsewhere, KeyboardInterrupt)) else 2)  # torch.mp ends the others
    finally:
        if spawned:
            _leave_process_group()


def _leave_process_group() -> None:
    import torch.distributed as dist

    with contextlib.suppress(Exception):  # at exit, after a peer is gone: nothing left to do
        if dist.is_initialized():
            dist.destroy_process_group()


def _picklable(exc: BaseException) -> BaseException:
    try:
        pickle.dumps(exc)
        return exc
    except Exception:  # noqa: BLE001  an exception holding unpicklable things: send its text
        return RuntimeError("".join(traceback.format_exception(exc)))


def rank_message(exc: BaseException, rank: int) -> str:
    """A non-zero rank's own error, labelled with its rank."""
    return f"cnnlab (rank {rank}): error: {exc}"


@contextlib.contextmanager
def _silenced(active: bool) -> Iterator[None]:
    """No console output (cnnlab's lines, log messages, warnings) from ranks other than 0."""
    if not active:
        yield
        return
    logger = logging.getLogger("cnnlab")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
