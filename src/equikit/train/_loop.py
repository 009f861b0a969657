"""The training loop: epochs of optimizer steps, evaluation, best-epoch tracking, early
stopping, checkpoints that resume bit for bit, a time budget, progress and metric files."""

from __future__ import annotations

import copy
import itertools
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from equikit.train._checkpoint import get_rng_state, load_checkpoint, save_checkpoint, set_rng_state
from equikit.train._config import TrainConfig, config_to_dict, save_config
from equikit.train._metrics import EarlyStopping, MetricsLog, write_summary
from equikit.train.distributed import DistributedContext, all_reduce_gradients, any_rank, barrier

CHECKPOINT, BEST, METRICS, SUMMARY, CONFIG = "checkpoint.pt", "best.pt", "metrics.csv", "summary.json", "config.yaml"


@dataclass
class FitResult:
    """What :func:`fit` returns (also written to ``summary.json``).

    ``stop_reason`` is one of ``"epochs"``, ``"max_steps"``, ``"budget"``,
    ``"early_stopping"``. ``best_metrics`` is the evaluation row of the best epoch (by
    ``config.monitor``), ``best_state`` a copy of the model's ``state_dict`` then.
    """

    epochs: int
    steps: int
    seconds: float
    stop_reason: str
    best_epoch: int | None
    best_metric: float
    best_metrics: dict[str, float] = field(default_factory=dict)
    last_metrics: dict[str, float] = field(default_factory=dict)
    best_state: dict[str, torch.Tensor] | None = None

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "best_state"}


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The shuffling generator of one epoch: a pure function of ``(seed, epoch)``, so an epoch
    interrupted half way is replayed with the same batch order on resume.

    Example:
        >>> a = torch.randperm(5, generator=epoch_generator(0, 3))
        >>> bool((a == torch.randperm(5, generator=epoch_generator(0, 3))).all())
        True
    """
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) % (2**63))


@dataclass
class _State:
    epoch: int = 0  # completed epochs
    batch_in_epoch: int = 0  # steps done in the running epoch
    step: int = 0
    seconds: float = 0.0
    loss_sum: float = 0.0
    best_epoch: int | None = None
    best_metrics: dict[str, float] = field(default_factory=dict)
    last_metrics: dict[str, float] = field(default_factory=dict)


def _check_fit_args(model, optimizer, batches, loss_fn, config, evaluate) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"fit: `model` must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"fit: `optimizer` must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    for name, fn in (("batches", batches), ("loss_fn", loss_fn)):
        if not callable(fn):
            raise TypeError(f"fit: `{name}` must be callable, got {type(fn).__name__}")
    if evaluate is not None and not callable(evaluate):
        raise TypeError(f"fit: `evaluate` must be callable or None, got {type(evaluate).__name__}")
    if not isinstance(config, TrainConfig):
        raise TypeError(f"fit: `config` must be a TrainConfig, got {type(config).__name__}")


def _progress(config: TrainConfig, initial: int, main: bool = True):
    from tqdm.auto import tqdm

    enabled = main and (config.progress if config.progress is not None else sys.stderr.isatty())
    return tqdm(total=config.epochs, initial=initial, disable=not enabled, unit="epoch", dynamic_ncols=True,
                file=sys.stderr)


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Callable[[int, torch.Generator], Iterable[Any]],
    loss_fn: Callable[[nn.Module, Any], torch.Tensor],
    config: TrainConfig,
    *,
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
    scheduler: Any = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    distributed: DistributedContext | None = None,
) -> FitResult:
    r"""Train ``model`` by minimising ``loss_fn(model, batch)`` with ``optimizer``.

    Each epoch draws its batches from ``batches(epoch, generator)`` where ``generator`` is
    :func:`epoch_generator` ``(config.seed, epoch)``; all randomness of batching must come
    from it (and model randomness from torch's global stream, which checkpoints carry), then
    ``resume=True`` continues an interrupted run exactly as if it had not stopped.

    After every ``config.eval_every`` epochs (and the last), ``evaluate(model)`` returns
    metrics (e.g. ``{"val_loss": ..., "test_loss": ...}``); the row ``epoch, step, seconds,
    train_loss, lr, *metrics`` is appended to ``out_dir/metrics.csv``; ``config.monitor``
    (any column) picks the best epoch, whose weights go to ``out_dir/best.pt``; early
    stopping follows ``config.patience``. The model is left in train mode: ``evaluate``
    should switch to eval mode and back itself.

    Files in ``out_dir`` (all written atomically): ``checkpoint.pt`` (model, optimizer,
    scheduler state, epoch, step, step within the epoch, seconds, early-stopping state,
    torch / numpy / Python RNG states, config), ``best.pt``, ``metrics.csv``,
    ``summary.json``, ``config.yaml``. A run stops after ``config.epochs``, or at
    ``config.max_steps`` / ``config.budget_s`` (checkpointed mid-epoch, resumable), or by
    early stopping.

    Args:
        model, optimizer: built by the caller (seed first with :func:`seed_everything`).
        batches: ``(epoch, generator) -> iterable of batches``.
        loss_fn: ``(model, batch) -> scalar loss``.
        config: :class:`TrainConfig`.
        evaluate: ``model -> {name: float}``; ``None``: monitor ``train_loss`` only.
        scheduler: an LR scheduler stepped once per epoch (``ReduceLROnPlateau`` gets the
            monitored metric at each evaluation instead).
        out_dir: where files go; ``None`` keeps everything in memory (no resume).
        resume: continue from ``out_dir/checkpoint.pt`` if it exists (else start fresh).
        distributed: a :class:`~equikit.train.distributed.DistributedContext` with more than
            one rank turns on data parallel training: ``batches`` must then yield this rank's
            shard of each global batch and ``loss_fn`` a loss whose mean over the ranks is the
            global loss; after ``backward`` the gradients (and the loss, for ``train_loss``)
            are averaged over the ranks before clipping and the step; ``evaluate`` must reduce
            its metrics over the ranks itself; the wall-clock budget is decided jointly; only
            rank 0 writes files; every rank resumes from the same checkpoint.

    Returns:
        :class:`FitResult`.

    Example:
        >>> import torch
        >>> from equikit.train import TrainConfig, fit, seed_everything
        >>> seed_everything(0)
        >>> x = torch.randn(64, 2); y = x @ torch.tensor([1.0, -2.0])
        >>> model = torch.nn.Linear(2, 1)
        >>> def batches(epoch, gen):
        ...     order = torch.randperm(64, generator=gen)
        ...     return [order[k:k + 16] for k in range(0, 64, 16)]
        >>> loss = lambda m, idx: ((m(x[idx]).squeeze(-1) - y[idx]) ** 2).mean()
        >>> cfg = TrainConfig(epochs=60, lr=0.1, monitor="train_loss", verbose=False, progress=False)
        >>> res = fit(model, torch.optim.Adam(model.parameters(), lr=cfg.lr), batches, loss, cfg)
        >>> res.epochs, res.steps, res.best_metric < 1e-3
        (60, 240, True)
    """
    _check_fit_args(model, optimizer, batches, loss_fn, config, evaluate)
    ctx = distributed if distributed is not None else DistributedContext()
    if not isinstance(ctx, DistributedContext):
        raise TypeError(f"fit: `distributed` must be a DistributedContext or None, got {type(distributed).__name__}")
    out = Path(out_dir) if out_dir is not None else None
    if resume and out is None:
        raise ValueError("fit: `resume=True` needs `out_dir` (where the checkpoint is)")
    writes = out is not None and ctx.is_main  # only rank 0 writes files
    metrics = MetricsLog(out / METRICS) if writes else None
    stopper = EarlyStopping(config.mode, config.patience, config.min_delta)
    st = _State()
    best_state = None
    log = _logger(config) if ctx.is_main else (lambda msg: None)
    has_checkpoint = resume and (out / CHECKPOINT).is_file()
    barrier(ctx)  # every rank has decided before rank 0 may delete an old checkpoint
    if has_checkpoint:
        ck = load_checkpoint(out / CHECKPOINT)
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        if scheduler is not None and ck.get("scheduler") is not None:
            scheduler.load_state_dict(ck["scheduler"])
        stopper.load_state_dict(ck["early_stopping"])
        st = _State(**ck["loop"])
        set_rng_state(ck["rng"])
        if metrics is not None:
            metrics.truncate(st.step)
        if (out / BEST).is_file():
            best_state = torch.load(out / BEST, map_location="cpu", weights_only=True)
        log(f"resumed from {out / CHECKPOINT}: epoch {st.epoch}, step {st.step}")
    elif writes:
        if resume:
            log(f"no checkpoint in {out}: starting fresh")
        out.mkdir(parents=True, exist_ok=True)
        for name in (METRICS, BEST, CHECKPOINT):
            (out / name).unlink(missing_ok=True)
    if writes:
        save_config(config, out / CONFIG)

    def checkpoint() -> None:
        if not writes:
            return
        save_checkpoint(out / CHECKPOINT, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "early_stopping": stopper.state_dict(), "loop": dict(st.__dict__), "rng": get_rng_state(),
            "config": config_to_dict(config)})

    def run_evaluation() -> bool:
        nonlocal best_state
        n = max(st.batch_in_epoch, 1) if st.batch_in_epoch else steps_in_epoch
        row = {"epoch": st.epoch, "step": st.step, "seconds": round(st.seconds, 3),
               "train_loss": st.loss_sum / max(n, 1), "lr": optimizer.param_groups[0]["lr"]}
        row.update({k: float(v) for k, v in (evaluate(model) if evaluate is not None else {}).items()})
        if config.monitor not in row:
            raise ValueError(f"fit: `config.monitor` {config.monitor!r} is not among the metrics {sorted(row)}")
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(row[config.monitor])
        st.last_metrics = row
        improved = stopper.update(row[config.monitor])
        if improved:
            st.best_epoch, st.best_metrics = st.epoch, row
            best_state = copy.deepcopy(model.state_dict())
            if writes:
                save_checkpoint(out / BEST, best_state)
        if metrics is not None:
            metrics.append(row)
        log(" ".join(f"{k} {v:.6g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
        return improved

    t0, seconds0 = time.perf_counter(), st.seconds
    bar = _progress(config, st.epoch, ctx.is_main)
    reason, steps_in_epoch = "epochs", 0

    def over_budget() -> str | None:
        st.seconds = seconds0 + time.perf_counter() - t0
        if config.max_steps is not None and st.step >= config.max_steps:
            return "max_steps"
        if config.budget_s is not None and any_rank(st.seconds >= config.budget_s, ctx):
            return "budget"
        return None

    try:
        while st.epoch < config.epochs:
            if (reason := over_budget() or "epochs") != "epochs":
                break
            it = iter(batches(st.epoch, epoch_generator(config.seed, st.epoch)))
            for batch in itertools.islice(it, st.batch_in_epoch, None):
                if (reason := over_budget() or "epochs") != "epochs":
                    break
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(model, batch)
                loss.backward()
                if ctx.enabled:  # average gradients and the loss over the ranks
                    loss = all_reduce_gradients(model.parameters(), ctx, extra=loss.detach())
                if config.grad_clip is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                st.step += 1
                st.batch_in_epoch += 1
                st.loss_sum += float(loss.detach())
            if reason != "epochs":
                break
            steps_in_epoch, st.batch_in_epoch = st.batch_in_epoch, 0
            st.epoch += 1
            st.seconds = seconds0 + time.perf_counter() - t0
            if scheduler is not None and not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step()
            if st.epoch % config.eval_every == 0 or st.epoch == config.epochs:
                run_evaluation()
                bar.set_postfix({config.monitor: f"{st.last_metrics[config.monitor]:.4g}"})
            st.loss_sum = 0.0
            bar.update(1)
            if stopper.should_stop:
                reason = "early_stopping"
            if st.epoch % config.checkpoint_every == 0 or reason != "epochs" or st.epoch == config.epochs:
                checkpoint()
            if reason != "epochs":
                break
        if reason == "budget" and st.last_metrics.get("step") != st.step:
            run_evaluation()  # the model as it stands when the budget ran out
        if reason in ("budget", "max_steps"):
            checkpoint()
    finally:
        bar.close()
    result = FitResult(epochs=st.epoch, steps=st.step, seconds=round(st.seconds, 3), stop_reason=reason,
                       best_epoch=st.best_epoch, best_metric=stopper.best, best_metrics=st.best_metrics,
                       last_metrics=st.last_metrics, best_state=best_state)
    if writes:
        write_summary(out / SUMMARY, {**result.summary(), "config": config_to_dict(config)})
    return result


def _logger(config: TrainConfig) -> Callable[[str], None]:
    def log(msg: str) -> None:
        if config.verbose:
            from tqdm.auto import tqdm

            tqdm.write(msg, file=sys.stderr)

    return log
