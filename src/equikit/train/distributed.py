r"""Distributed data parallel training over ``torch.distributed`` (gloo on CPU, nccl on GPU),
launched by ``torchrun``.

Every rank holds the same model (same seed, and the parameters broadcast from rank 0), walks
the same sequence of *global* batches (the batch order is a pure function of ``(seed,
epoch)``, :func:`~equikit.train.epoch_generator`) and trains on its contiguous shard of each
(:func:`shard`). Each rank's loss ``L_r`` is scaled so that the global loss is their mean,
``L = (1/W) sum_r L_r``; after ``backward`` the gradients are averaged over ranks by one
explicit ``all_reduce`` of the flattened gradients (:func:`all_reduce_gradients`), so every
rank takes the same optimizer step as single-process training on the whole global batch
(up to the order of floating-point sums).

Why an explicit all-reduce and not :class:`torch.nn.parallel.DistributedDataParallel`: the
loop calls ``loss.backward()`` once per step on a loss that already contains a
``create_graph=True`` derivative (forces), and wrappers such as the EMA model hold the
trained module as an attribute; an explicit reduction after ``backward`` is independent of
how the loss was built (double backward included), costs one collective per step, and keeps
the model unwrapped (no ``module.`` prefix in checkpoints). Overlapping communication with
the backward pass, DDP's speed trick, matters for large models on many GPUs, not here.

Only rank 0 writes files (checkpoints, metrics, plots; each atomically); all ranks resume from
the same checkpoint. Metrics are reduced over ranks with :func:`all_reduce_sums`.

Example (one process: no process group, every helper is the identity):
    >>> ctx = init_distributed()
    >>> ctx.world_size, ctx.is_main, shard([0, 1, 2, 3], ctx)
    (1, True, [0, 1, 2, 3])
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "DistributedContext",
    "all_reduce_gradients",
    "all_reduce_sums",
    "any_rank",
    "barrier",
    "broadcast_parameters",
    "check_global_batch",
    "close_distributed",
    "init_distributed",
    "shard",
]


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: ``rank`` in ``0..world_size-1``, ``local_rank`` on its
    machine, the ``backend`` (``None`` without a process group) and the ``device`` it trains on.

    Example:
        >>> DistributedContext(rank=1, world_size=2, backend="gloo").is_main
        False
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: str = "cpu"

    @property
    def enabled(self) -> bool:
        """``True`` when there is more than one rank (collectives run)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """``True`` on rank 0, the only rank that writes files."""
        return self.rank == 0


def _env_int(env: Mapping[str, str], name: str) -> int:
    value = env.get(name)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"init_distributed: environment variable {name} must be an int (torchrun sets it), "
                         f"got {value!r}") from None


def init_distributed(backend: str | None = None, *, env: Mapping[str, str] | None = None) -> DistributedContext:
    """Join the process group that ``torchrun`` describes in the environment (``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``).

    Without ``WORLD_SIZE`` (a plain ``python`` run) or with ``WORLD_SIZE=1`` this returns the
    single-process context and starts nothing. A process group that already exists (e.g. made
    by the caller with a ``file://`` init) is used as it is.

    Args:
        backend: ``"gloo"`` or ``"nccl"``; default ``"nccl"`` when CUDA is available, else ``"gloo"``.
        env: the environment to read (default ``os.environ``).

    Returns:
        :class:`DistributedContext`; on nccl the process's CUDA device is set to ``LOCAL_RANK``.
    """
    import torch.distributed as dist

    if backend is not None and backend not in ("gloo", "nccl"):
        raise ValueError(f"init_distributed: `backend` must be 'gloo', 'nccl' or None, got {backend!r}")
    if dist.is_available() and dist.is_initialized():
        return _context_from_group()
    env = os.environ if env is None else env
    if env.get("WORLD_SIZE") is None:
        return DistributedContext()
    world, rank = _env_int(env, "WORLD_SIZE"), _env_int(env, "RANK")
    local = _env_int(env, "LOCAL_RANK") if env.get("LOCAL_RANK") is not None else rank
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"init_distributed: need 0 <= RANK < WORLD_SIZE, got RANK={rank}, WORLD_SIZE={world}")
    if world == 1:
        return DistributedContext()
    if not dist.is_available():
        raise RuntimeError("init_distributed: this torch build has no torch.distributed; run one process")
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    device = "cpu"
    if backend == "nccl":
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    dist.init_process_group(backend, rank=rank, world_size=world)
    return DistributedContext(rank=rank, world_size=world, local_rank=local, backend=backend, device=device)


def _context_from_group() -> DistributedContext:
    import torch.distributed as dist

    backend = str(dist.get_backend())
    rank = dist.get_rank()
    local = int(os.environ.get("LOCAL_RANK", rank))
    device = f"cuda:{local}" if backend == "nccl" else "cpu"
    return DistributedContext(rank=rank, world_size=dist.get_world_size(), local_rank=local, backend=backend,
                              device=device)


def close_distributed(ctx: DistributedContext) -> None:
    """Leave the process group (after a last barrier); nothing for one process."""
    if ctx.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def check_global_batch(batch_size: int, ctx: DistributedContext, where: str) -> None:
    """``ValueError`` unless the global ``batch_size`` splits evenly over the ranks.

    Example:
        >>> try:
        ...     check_global_batch(6, DistributedContext(world_size=4), "train")
        ... except ValueError as err:
        ...     print(str(err).split(";")[0])
        train: the global `batch_size` 6 is not divisible by the world size 4
    """
    if batch_size % ctx.world_size:
        raise ValueError(f"{where}: the global `batch_size` {batch_size} is not divisible by the world size "
                         f"{ctx.world_size}; use a multiple of {ctx.world_size} (each rank trains on "
                         "batch_size / world_size structures)")


def shard(items: Sequence[Any], ctx: DistributedContext) -> list[Any]:
    """This rank's contiguous part of a global batch: ``W`` parts whose sizes differ by at
    most one (the first ``len % W`` parts one longer), in order; deterministic, so a resumed
    run gets the same shards. A short last batch can leave a rank an empty part.

    Example:
        >>> [shard(list(range(5)), DistributedContext(rank=r, world_size=2)) for r in (0, 1)]
        [[0, 1, 2], [3, 4]]
    """
    items = list(items)
    n, w, r = len(items), ctx.world_size, ctx.rank
    base, extra = divmod(n, w)
    start = r * base + min(r, extra)
    return items[start:start + base + (1 if r < extra else 0)]


def all_reduce_gradients(parameters: Iterable[torch.nn.Parameter], ctx: DistributedContext,
                         extra: torch.Tensor | None = None) -> torch.Tensor | None:
    """Average the gradients of ``parameters`` over the ranks in place (one ``all_reduce`` of
    their concatenation; a missing gradient counts as zeros and is filled in). ``extra``, a
    small tensor (e.g. the detached loss), rides along and comes back averaged.

    Example:
        >>> p = torch.nn.Parameter(torch.ones(2)); p.grad = torch.full((2,), 3.0)
        >>> all_reduce_gradients([p], DistributedContext()), p.grad.tolist()
        (None, [3.0, 3.0])
    """
    if not ctx.enabled:
        return extra
    import torch.distributed as dist

    params = [p for p in parameters if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    parts = [p.grad.reshape(-1) for p in params]
    if extra is not None:
        parts.append(extra.detach().reshape(-1).to(device=parts[0].device if parts else extra.device,
                                                    dtype=parts[0].dtype if parts else extra.dtype))
    flat = torch.cat(parts) if parts else torch.zeros(0)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= ctx.world_size
    k = 0
    for p in params:
        n = p.grad.numel()
        p.grad.copy_(flat[k:k + n].view_as(p.grad))
        k += n
    return flat[k:].reshape(extra.shape).to(extra.dtype) if extra is not None else None


def all_reduce_sums(values: Mapping[str, float], ctx: DistributedContext) -> dict[str, float]:
    """Sum floats over the ranks (float64, one collective), e.g. error sums and counts from
    which every rank then forms the same global means.

    Example:
        >>> all_reduce_sums({"sq": 2.0, "n": 4.0}, DistributedContext())
        {'sq': 2.0, 'n': 4.0}
    """
    keys = list(values)
    if not ctx.enabled:
        return {k: float(values[k]) for k in keys}
    import torch.distributed as dist

    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return dict(zip(keys, t.tolist()))


def any_rank(flag: bool, ctx: DistributedContext) -> bool:
    """``True`` on every rank when ``flag`` is true on any rank (a stop decision, e.g. a wall-clock
    budget, that all ranks must take together)."""
    if not ctx.enabled:
        return bool(flag)
    return all_reduce_sums({"flag": float(bool(flag))}, ctx)["flag"] > 0


def barrier(ctx: DistributedContext) -> None:
    """Wait for every rank (nothing for one process)."""
    if ctx.enabled:
        import torch.distributed as dist

        dist.barrier()


def broadcast_parameters(module: torch.nn.Module, ctx: DistributedContext) -> None:
    """Copy rank 0's parameters and buffers to every rank (one broadcast each), so ranks start
    identical even if their initialisation drew different random numbers."""
    if not ctx.enabled:
        return
    import torch.distributed as dist

    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src=0)
