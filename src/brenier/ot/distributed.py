"""The Monte Carlo OT fit on several processes, GPUs or nodes: a thin layer over ``torch.distributed``.

brenier builds no cluster layer of its own: it runs under ``torchrun`` (gloo on CPU, NCCL on CUDA,
several nodes through torchrun's rendezvous) and talks to the other ranks only through the few
collectives below. Two ways to split a fit over P ranks, both with the same answer as one process:

* **samples sharded** (default): a Monte Carlo batch is a fixed list of chunks of one global
  sample stream (``brenier.sources.Source.chunks``: a chunk's points depend only on the seed and
  its index); rank r scores the chunks g ≡ r (mod P). The ranks add their half-sample counts
  (``all_reduce``, exact int64) and gather their near-tie Hessian pairs (``all_gather`` of padded
  key/weight rows, merged once, in rank order, on the CPU), so every rank holds bit-identical
  statistics and takes the same Newton step (the CG solve on the sparse Laplacian runs on every
  rank, redundantly, from identical inputs).
* **targets sharded** (``shard_targets=True``): rank r keeps the contiguous slice
  ``shard_range(N, r, P)`` of the targets in its own ``BrenierPotential``; every rank scores every
  chunk against its slice, and the per-sample top-k is merged across ranks (``all_gather``, then a
  top-k of the P·k candidates ordered by (score desc, global index asc): exactly the unsharded
  top-k, ties included).

Outside a fit nothing is distributed unless asked: the default communicator is the single-process
no-op ``Communicator()``, so code that runs on rank 0 only (writing outputs, a report) never
enters a collective that the other ranks would not join.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import datetime
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from .potential import DEFAULT_MEMORY_BUDGET, BrenierPotential

__all__ = [
    "Communicator", "TorchCommunicator", "DistributedError", "ShardedPotential", "CommStats", "PROCESS_STATS",
    "current", "use", "setup", "is_main_process", "launched_by_torchrun", "shard_range",
    "canonical_topk", "merge_topk", "local_device", "check_identical", "DEFAULT_TIMEOUT",
]

#: how long a collective waits for the other ranks before failing (a dead rank must not hang the
#: others); override with the environment variable BRENIER_DIST_TIMEOUT (seconds)
DEFAULT_TIMEOUT = datetime.timedelta(seconds=300)


class DistributedError(RuntimeError):
    """A collective failed: another rank died, crashed or did not answer within the timeout."""


@dataclass
class CommStats:
    """What this rank spent in collectives: wall seconds, bytes it contributed (its input tensor
    per call; an all-gather receives P − 1 times that), number of calls, bytes per operation."""

    seconds: float = 0.0
    bytes: int = 0
    calls: int = 0
    bytes_by_op: dict[str, int] = field(default_factory=dict)

    def add(self, op: str, seconds: float, nbytes: int) -> None:
        self.seconds += seconds
        self.bytes += nbytes
        self.calls += 1
        self.bytes_by_op[op] = self.bytes_by_op.get(op, 0) + nbytes

    def snapshot(self) -> dict:
        return {"seconds": self.seconds, "bytes": self.bytes, "calls": self.calls, "bytes_by_op": dict(self.bytes_by_op)}

    def reset(self) -> None:
        self.seconds, self.bytes, self.calls = 0.0, 0, 0
        self.bytes_by_op = {}


#: every collective of this process, whichever communicator made it (benchmarks read it)
PROCESS_STATS = CommStats()


class Communicator:
    """One process: every collective is the identity (the default everywhere)."""

    rank: int = 0
    world_size: int = 1

    def __init__(self) -> None:
        self.stats = CommStats()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Elementwise sum over ranks of ``t`` (same shape on every rank)."""
        return t

    def all_gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        """``t`` of every rank, in rank order (same shape and dtype on every rank)."""
        return [t]

    def broadcast(self, t: torch.Tensor, src: int = 0) -> torch.Tensor:
        """Rank ``src``'s ``t`` on every rank (same shape and dtype on every rank)."""
        return t

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.rank}, world_size={self.world_size})"


class TorchCommunicator(Communicator):
    """The ranks of an initialised ``torch.distributed`` process group (the default group if None).

    Tensors travel on the backend's device (CUDA for NCCL, CPU otherwise) and come back on the
    caller's. A failed collective (a peer killed, or silent past the group's timeout) raises
    ``DistributedError`` naming this rank and what to do.
    """

    def __init__(self, group=None) -> None:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise DistributedError("torch.distributed is not initialised: launch with torchrun, or call setup(True)")
        super().__init__()
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        self.backend = dist.get_backend(group)
        self._device = torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" else torch.device("cpu")

    def _call(self, name: str, fn, nbytes: int):
        t0 = time.perf_counter()
        try:
            out = fn()
        except (RuntimeError, ValueError) as e:  # DistBackendError, gloo "Connection closed by peer", timeouts
            raise DistributedError(
                f"rank {self.rank} of {self.world_size}: {name} failed: another rank stopped (killed, crashed, out of "
                f"memory) or did not answer within the timeout. Rerun the job: a fit with a checkpoint resumes from "
                f"its last iteration. Cause: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
            ) from e
        dt = time.perf_counter() - t0
        self.stats.add(name, dt, nbytes)
        PROCESS_STATS.add(name, dt, nbytes)
        return out

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        buf = t.to(self._device).contiguous().clone()
        self._call("all_reduce", lambda: dist.all_reduce(buf, op=dist.ReduceOp.SUM, group=self.group), buf.nbytes)
        return buf.to(t.device)

    def all_gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        import torch.distributed as dist

        buf = t.to(self._device).contiguous()
        out = [torch.empty_like(buf) for _ in range(self.world_size)]
        self._call("all_gather", lambda: dist.all_gather(out, buf, group=self.group), buf.nbytes)
        return [o.to(t.device) for o in out]

    def broadcast(self, t: torch.Tensor, src: int = 0) -> torch.Tensor:
        import torch.distributed as dist

        buf = t.to(self._device).contiguous().clone()
        self._call("broadcast", lambda: dist.broadcast(buf, src=src, group=self.group), buf.nbytes)
        return buf.to(t.device)


_SINGLE = Communicator()
_current: contextvars.ContextVar[Communicator] = contextvars.ContextVar("brenier_communicator", default=_SINGLE)


def current() -> Communicator:
    """The communicator that ``montecarlo.batch_stats`` splits its work over (``use`` sets it)."""
    return _current.get()


@contextlib.contextmanager
def use(comm: Communicator) -> Iterator[Communicator]:
    """Within the block, Monte Carlo statistics are computed jointly by ``comm``'s ranks; every
    rank must then make the same calls in the same order (they are collectives)."""
    if not isinstance(comm, Communicator):
        raise TypeError(f"comm: expected a brenier.ot.distributed.Communicator, got {type(comm).__name__}")
    token = _current.set(comm)
    try:
        yield comm
    finally:
        _current.reset(token)


def launched_by_torchrun() -> bool:
    """True when the torchrun environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) is set."""
    return all(v in os.environ for v in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def is_main_process() -> bool:
    """True on the rank that writes outputs: rank 0 of an initialised process group, else the
    process torchrun started as RANK 0, else (a plain single process) True."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def local_device(device: torch.device) -> torch.device:
    """Under torchrun, a bare "cuda" means this process's GPU, cuda:LOCAL_RANK (not GPU 0 for all)."""
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def _timeout() -> datetime.timedelta:
    raw = os.environ.get("BRENIER_DIST_TIMEOUT")
    if raw is None:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ValueError(f"BRENIER_DIST_TIMEOUT: expected a positive number of seconds, got {raw!r}")
    return datetime.timedelta(seconds=seconds)


def setup(distributed: bool | None, device: torch.device | str = "cpu") -> Communicator:
    """The communicator a fit runs on.

    distributed: False → one process. None (auto) → the initialised process group if there is
    one, else the torchrun environment's if set (initialised here), else one process. True → the
    same as None (a plain ``python`` run without torchrun is a world of one process).
    Initialisation uses NCCL for a CUDA ``device`` and gloo otherwise, with ``DEFAULT_TIMEOUT``
    (or BRENIER_DIST_TIMEOUT) so a dead rank makes the others fail instead of hanging.
    """
    if distributed is not None and not isinstance(distributed, bool):
        raise TypeError(f"distributed: expected True, False or None, got {distributed!r}")
    if distributed is False:
        return Communicator()
    import torch.distributed as dist

    if not dist.is_available():
        if distributed:
            raise DistributedError("distributed=True: this PyTorch build has no torch.distributed")
        return Communicator()
    if not dist.is_initialized():
        if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) <= 1:
            return Communicator()
        dev = torch.device(device)
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_device(dev))
        dist.init_process_group(backend, timeout=_timeout())
        # a group left to the interpreter's exit aborts the process ("terminate called without an
        # active exception"): the group brenier opened, brenier closes
        atexit.register(_close_group)
    if dist.get_world_size() <= 1:
        return Communicator()
    return TorchCommunicator()


def _close_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def shard_range(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """[lo, hi): the contiguous slice of n targets that ``rank`` of ``world_size`` keeps
    (sizes differ by at most one, the larger first)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank, world_size: expected 0 <= rank < world_size, got {rank}, {world_size}")
    base, extra = divmod(int(n), world_size)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (rank < extra)


def canonical_topk(values: torch.Tensor, indices: torch.Tensor, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Order each row of candidates (values, indices: (M, c)) by score descending, equal scores by
    index ascending, and keep the first ``k`` (default all): the rule of ``BrenierPotential.topk``
    (``torch.topk`` leaves the order of equal scores unspecified)."""
    by_index = indices.argsort(dim=1)
    v, i = values.gather(1, by_index), indices.gather(1, by_index)
    by_value = torch.sort(v, dim=1, descending=True, stable=True).indices
    if k is not None:
        by_value = by_value[:, :k]
    return v.gather(1, by_value), i.gather(1, by_value)


def merge_topk(values: list[torch.Tensor], indices: list[torch.Tensor], k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge per-shard top-k lists (each (M, k_r), global indices) into the top-k of the union:
    (M, k) values and indices, ordered by score desc then index asc — the unsharded answer."""
    return canonical_topk(torch.cat(values, dim=1), torch.cat(indices, dim=1), k)


class ShardedPotential:
    """u_h over targets split across the ranks of ``comm``: this rank scores only its slice.

    targets: (N, d), all of them (a host copy: the solver's neighbour floor and checkpoints read
    them); heights: (N,). Only the slice ``shard_range(N, rank, P)`` goes to ``device`` in a local
    ``BrenierPotential``: the score blocks, the device's memory and work shrink by P.
    ``topk``/``argmax`` are collectives (every rank must call them with the same points) and
    return the global answer; ``evaluations`` counts all ranks' score evaluations.
    """

    shards_targets = True

    def __init__(self, targets: torch.Tensor, heights: torch.Tensor, comm: Communicator, *,
                 device: torch.device | str | None = None, memory_budget: int = DEFAULT_MEMORY_BUDGET,
                 compute_dtype: torch.dtype = torch.float32):
        if targets.ndim != 2 or heights.shape != (targets.shape[0],):
            raise ValueError(f"targets (N, d) and heights (N,) expected, got {tuple(targets.shape)} and {tuple(heights.shape)}")
        if targets.shape[0] < comm.world_size:
            raise ValueError(f"targets: {targets.shape[0]} targets cannot be sharded over {comm.world_size} ranks")
        self.comm = comm
        self.targets = targets
        self.device = torch.device(device) if device is not None else targets.device
        self.lo, self.hi = shard_range(targets.shape[0], comm.rank, comm.world_size)
        self.local = BrenierPotential(targets[self.lo:self.hi].to(self.device), heights[self.lo:self.hi],
                                      memory_budget=memory_budget, compute_dtype=compute_dtype)
        self.compute_dtype = compute_dtype
        self.memory_budget = int(memory_budget)
        self._other_evaluations = 0
        self.set_heights(heights)

    @property
    def n_targets(self) -> int:
        return self.targets.shape[0]

    @property
    def dim(self) -> int:
        return self.targets.shape[1]

    @property
    def block_rows(self) -> int:
        return self.local.block_rows

    @property
    def evaluations(self) -> int:
        return self.local.evaluations + self._other_evaluations

    @evaluations.setter
    def evaluations(self, value: int) -> None:
        self._other_evaluations = int(value) - self.local.evaluations

    def reset_count(self) -> None:
        self.local.reset_count()
        self._other_evaluations = 0

    def set_heights(self, heights: torch.Tensor) -> None:
        """heights: (N,), the same on every rank; this rank keeps its slice for scoring."""
        self.heights = heights.to(device=self.device, dtype=torch.float64)
        self.local.set_heights(self.heights[self.lo:self.hi])

    def topk(self, x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(values (M, k), global indices (M, k)) of the k best targets of every rank's slice
        for x (M, d), ordered by score desc then index asc. A collective."""
        k = min(int(k), self.n_targets)
        # BrenierPotential.topk keeps the lowest indices among equal scores, also at the k-th
        # place: each slice's list holds its part of the global top-k, so the merge is exact
        v, i = self.local.topk(x, k)
        i = i + self.lo
        m = v.shape[0]
        if v.shape[1] < k:  # a slice smaller than k: pad with candidates that never win
            pad = k - v.shape[1]
            v = torch.cat([v, v.new_full((m, pad), -torch.inf)], 1)
            i = torch.cat([i, i.new_full((m, pad), self.n_targets)], 1)
        # one collective per call: scores and indices travel together as float64 (a float32 score
        # and an index below 2^53 are both exact in float64)
        packed = torch.stack([v.double(), i.double()], 2)
        parts = self.comm.all_gather(packed)
        self._other_evaluations += m * (self.n_targets - (self.hi - self.lo))
        vals = [p[..., 0].to(self.compute_dtype) for p in parts]
        idx = [p[..., 1].long() for p in parts]
        return merge_topk(vals, idx, k)

    def argmax(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(values (M,), global indices (M,)): u_h(x) and the cell of each x (lowest index on ties)."""
        v, i = self.topk(x, 1)
        return v[:, 0], i[:, 0]


def check_identical(comm: Communicator, t: torch.Tensor, name: str) -> None:
    """Raise ``DistributedError`` unless ``t`` is bit-identical on every rank (rank 0's copy is
    broadcast and compared): the ranks of a fit must have taken the same steps."""
    if comm.world_size <= 1:
        return
    ref = comm.broadcast(t.detach().clone(), src=0)
    same = torch.tensor([int(torch.equal(ref, t))], dtype=torch.int64)
    if int(comm.all_reduce_sum(same)[0]) != comm.world_size:
        raise DistributedError(f"{name}: the ranks disagree after the fit (rank {comm.rank}: "
                               f"{'same as' if bool(same[0]) else 'differs from'} rank 0); their inputs or library versions differ")
