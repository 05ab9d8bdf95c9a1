"""The processes of one run, as each of them sees the others: its rank, and the few exchanges a run
needs outside Lightning's fits (cnnlab.training.distributed starts the processes).

One rule: rank 0 writes and decides, the others wait for it and receive what it decided
(:meth:`Ranks.from_zero`), so no two processes write one file and every rank takes the same path.
The exchanges use a gloo group of their own (CPU objects, whatever the devices train on).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

from cnnlab.errors import CnnlabError
from cnnlab.machine import peak_rss_bytes

if TYPE_CHECKING:  # torch loads only when a run starts: the CLI imports this module for its errors
    import torch
    from torch import nn

    from cnnlab.config import TrainConfig

T = TypeVar("T")


class StoppedElsewhere(CnnlabError):
    """Another process of the run failed or was interrupted: this one stops too (the other says why)."""


@contextlib.contextmanager
def _exchange() -> Iterator[None]:
    """A collective of cnnlab's own; a process that left mid-way is a clear error, not a gloo trace."""
    try:
        yield
    except RuntimeError as exc:  # torch.distributed.DistError and gloo's "connection closed" are RuntimeErrors
        raise StoppedElsewhere(
            f"another process of the run stopped ({str(exc).splitlines()[0][:120]}); see its messages"
        ) from None


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run's processes, and the exchanges between them.

    A single process is ``Ranks()``: every method then simply runs or returns locally.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    num_nodes: int = 1
    device: torch.device | None = None  # this process's device (None: one process decides as before)
    group: Any = field(default=None, repr=False)  # gloo group of cnnlab's own exchanges (CPU objects)

    @property
    def is_zero(self) -> bool:
        return self.rank == 0

    @property
    def several(self) -> bool:
        return self.world_size > 1

    # --- exchanges ----------------------------------------------------------------------------

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` on every rank (pickled: keep it small)."""
        if not self.several:
            return value
        import torch.distributed as dist

        box: list[Any] = [value if self.is_zero else None]
        with _exchange():
            dist.broadcast_object_list(box, src=0, group=self.group)
        return cast(T, box[0])

    def _zero_runs(self, fn: Callable[[], T], share: bool) -> T | None:
        if self.is_zero:
            try:
                value = fn()
            except BaseException as exc:
                self.broadcast(_Failed(str(exc) or type(exc).__name__))
                raise
            self.broadcast(value if share else None)
            return value
        got = self.broadcast(None)
        if isinstance(got, _Failed):
            raise StoppedElsewhere(got.message)
        return got

    def from_zero(self, fn: Callable[[], T]) -> T:
        """``fn()`` run by rank 0 only; its result reaches every rank, its failure stops them all."""
        if not self.several:
            return fn()
        return cast(T, self._zero_runs(fn, share=True))  # shared: rank 0's value, on every rank

    def zero_first(self, fn: Callable[[], T]) -> T:
        """``fn()`` on rank 0, then on the other ranks, which may read what rank 0 wrote (a cache)."""
        if not self.several:
            return fn()
        value = self._zero_runs(fn, share=False)
        return cast(T, value) if self.is_zero else fn()  # rank 0 has its own value

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any of them."""
        if not self.several:
            return flag
        import torch
        import torch.distributed as dist

        tensor = torch.tensor([int(flag)])
        with _exchange():
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=self.group)
        return bool(tensor.item())

    def any_later(self, flag: bool) -> Callable[[], bool]:
        """Starts :meth:`any` without waiting; the returned call gives its answer (waiting if need be).

        Asked once per training step, the answer of the previous step is ready: no step waits for it.
        """
        if not self.several:
            return lambda: flag
        import torch
        import torch.distributed as dist

        tensor = torch.tensor([int(flag)])
        with _exchange():
            work = dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=self.group, async_op=True)

        def answer() -> bool:
            with _exchange():
                work.wait()
            return bool(tensor.item())

        return answer

    def shard(self, count: int) -> torch.Tensor:
        """The positions of ``count`` items this rank handles: every ``world_size``-th from ``rank``."""
        import torch

        return torch.arange(self.rank, count, self.world_size)

    def gather_rows(self, part: torch.Tensor, total: int) -> torch.Tensor:
        """All ``total`` rows on every rank, from each rank's rows ``shard(total)``, in order."""
        if not self.several:
            return part
        import torch
        import torch.distributed as dist

        size = -(-total // self.world_size)
        padded = part.new_zeros((size, *part.shape[1:]))  # shards differ by a row at most: pad them equal
        padded[: len(part)] = part
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        with _exchange():
            dist.all_gather(parts, padded.contiguous(), group=self.group)
        # Row i of rank r is row i * world_size + r: interleave, then drop the padding at the end.
        return torch.stack(parts, dim=1).reshape(size * self.world_size, *part.shape[1:])[:total]

    def peak_rss_mb(self) -> list[int]:
        """Each rank's peak resident memory so far, in MiB, in rank order (0 where unknown)."""
        import torch

        mine = torch.tensor([float(peak_rss_bytes() or 0) / 2**20], dtype=torch.float64)
        return [round(v) for v in self.gather_rows(mine, self.world_size).tolist()]

    def share_weights(self, model: nn.Module) -> None:
        """Rank 0's weights (parameters and buffers) into every rank's ``model``."""
        if not self.several:
            return
        state = self.broadcast({k: v.detach().cpu() for k, v in model.state_dict().items()} if self.is_zero else None)
        if not self.is_zero:
            assert state is not None  # rank 0's
            model.load_state_dict(state)


@dataclass
class _Failed:
    message: str


@dataclass(frozen=True)
class BatchPlan:
    """How ``--batch-size`` is spread over the processes."""

    per_device: int
    world_size: int
    asked: int  # --batch-size

    @property
    def global_batch(self) -> int:
        return self.per_device * self.world_size


def batch_plan(batch_size: int, world_size: int, per_device: bool) -> BatchPlan:
    """By default the processes share ``batch_size`` (the same training as one process); with
    ``per_device`` each takes all of it. An uneven split rounds the per-device batch down."""
    share = batch_size if per_device else max(1, batch_size // world_size)
    return BatchPlan(share, world_size, batch_size)


def scale_line(plan: BatchPlan, cfg: TrainConfig, ranks: Ranks) -> str:
    """The line printed when several processes start: who trains, the batches and the LR rule."""
    per_node = ranks.world_size // max(ranks.num_nodes, 1)
    device = ranks.device.type if ranks.device is not None else "device"
    strategy = "auto: ddp" if cfg.strategy == "auto" else cfg.strategy
    line = (
        f"{ranks.world_size} processes ({strategy}; {ranks.num_nodes} machine(s) x {per_node} {device} "
        f"device(s)): global batch {plan.global_batch} = {ranks.world_size} x {plan.per_device} per device"
    )
    if cfg.batch_per_device:
        return (
            line + f" (--batch-per-device); the learning rates are as given, not scaled (the linear "
            f"rule would multiply them by {ranks.world_size})"
        )
    if plan.global_batch != plan.asked:
        line += f" (--batch-size {plan.asked} does not split evenly over {ranks.world_size} processes)"
    return line + "; the learning rates are as given, for this global batch (the same training as one process)"


SINGLE = Ranks()
