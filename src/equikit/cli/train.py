"""``equikit train TASK ...``: train a model for a registered task with the shared core
:mod:`equikit.train` (progress, checkpoints, exact resume, seeds, metrics files).

Tasks register themselves with :func:`register_task` (a name, a help line, a function adding
the task's own arguments, and a function running it). Every task gets the common arguments of
:func:`add_common_arguments`; :func:`config_from_args` turns them (over an optional YAML
``--config``) into a :class:`~equikit.train.TrainConfig`. Providers listed in
``TASK_PROVIDERS`` are imported when the command is built; each calls :func:`register_task`.

    equikit train nbody --model egnn --seed 0 --epochs 100 --budget-s 600 --out runs/egnn-s0
    equikit train nbody --model egnn --seed 0 --epochs 100 --out runs/egnn-s0 --resume
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from equikit.train import TrainConfig, config_from_dict, config_to_dict, load_config


@dataclass(frozen=True)
class Task:
    """A training task: ``add_arguments(parser)`` adds its own flags, ``run(args) -> exit code``."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


TASKS: dict[str, Task] = {}
# modules that call register_task when imported (other tasks: add their module here); a
# provider missing from this checkout is skipped
TASK_PROVIDERS: tuple[str, ...] = ("equikit.cli.train_graph", "equikit.cli.train_potential")


def register_task(task: Task) -> Task:
    """Add ``task`` to :data:`TASKS` (a name already taken raises ValueError)."""
    if not isinstance(task, Task):
        raise TypeError(f"register_task: `task` must be a Task, got {type(task).__name__}")
    if task.name in TASKS and TASKS[task.name] is not task:
        raise ValueError(f"register_task: a task named {task.name!r} is already registered")
    TASKS[task.name] = task
    return task


# flag -> TrainConfig field, for the common arguments
_COMMON = {"seed": "seed", "epochs": "epochs", "budget_s": "budget_s", "max_steps": "max_steps", "lr": "lr",
           "weight_decay": "weight_decay", "batch_size": "batch_size", "eval_every": "eval_every",
           "patience": "patience", "grad_clip": "grad_clip", "progress": "progress",
           "checkpoint_every": "checkpoint_every"}


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    """Flags every task shares. Defaults are ``None`` so that only flags given on the command
    line override a ``--config`` file (and the config's defaults)."""
    p.add_argument("--config", type=Path, default=None, help="YAML TrainConfig; flags override it")
    p.add_argument("--out", type=Path, default=None, help="run folder: checkpoint, metrics.csv, summary.json")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt (exactly)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--budget-s", type=float, default=None, help="stop after this many seconds (resumable)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps (resumable)")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--eval-every", type=int, default=None)
    p.add_argument("--patience", type=int, default=None, help="early stopping (evaluations)")
    p.add_argument("--grad-clip", type=float, default=None)
    p.add_argument("--checkpoint-every", type=int, default=None)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="tqdm bar (default: when stderr is a terminal)")
    p.add_argument("--quiet", action="store_true", help="no per-evaluation lines")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")


def config_from_args(
    args: argparse.Namespace, defaults: TrainConfig, extra: dict[str, Any] | None = None
) -> TrainConfig:
    """``defaults``, then the YAML ``--config``, then the flags given, then ``extra`` merged
    into ``config.extra``."""
    cfg = load_config(args.config) if args.config is not None else defaults
    data = config_to_dict(cfg)
    if args.config is None:
        data["extra"] = dict(defaults.extra)
    for flag, field in _COMMON.items():
        value = getattr(args, flag, None)
        if value is not None:
            data[field] = value
    if getattr(args, "quiet", False):
        data["verbose"] = False
    data["extra"] = {**data["extra"], **{k: v for k, v in (extra or {}).items() if v is not None}}
    return config_from_dict(TrainConfig, data)


def register(subparsers) -> None:
    for name in TASK_PROVIDERS:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name is None or not name.startswith(err.name):
                raise
    train = subparsers.add_parser("train", help="train a model for a task (nbody, ...)")
    sub = train.add_subparsers(dest="task", required=True, metavar="TASK")
    for task in TASKS.values():
        p = sub.add_parser(task.name, help=task.help, description=task.help)
        add_common_arguments(p)
        task.add_arguments(p)
        p.set_defaults(func=task.run)


# --------------------------------------------------------------------------- nbody
def _nbody_arguments(p: argparse.ArgumentParser) -> None:
    from equikit.train.nbody import NBODY_MODELS

    p.add_argument("--model", choices=sorted(NBODY_MODELS), default=None)
    p.add_argument("--model-kwargs", type=json.loads, default=None, metavar="JSON",
                   help='constructor arguments, e.g. \'{"hidden": 64}\'')
    p.add_argument("--n-train", type=int, default=None, help="training simulations (3000)")
    p.add_argument("--n-val-eval", type=int, default=None, help="validation simulations for model selection (all)")
    p.add_argument("--root", default=None, help="data dir (default: $EQUIKIT_DATA or the user cache)")


NBODY_CONFIG = TrainConfig(epochs=10000, lr=5e-4, weight_decay=1e-12, batch_size=100, eval_every=5,
                           extra={"model": "egnn"})


def _run_nbody(args: argparse.Namespace) -> int:
    import torch

    from equikit.train.nbody import train_nbody

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    cfg = config_from_args(args, NBODY_CONFIG, {"model": args.model, "model_kwargs": args.model_kwargs,
                                                "n_train": args.n_train, "n_val_eval": args.n_val_eval})
    out = train_nbody(cfg, args.out, resume=args.resume, root=args.root)
    keys = ("model", "epochs", "steps", "seconds", "stop_reason", "best_epoch", "val_mse", "test_mse", "published")
    print(json.dumps({k: out[k] for k in keys}), file=sys.stdout, flush=True)
    return 0


register_task(Task("nbody", "charged n-body dynamics (EGNN protocol): predict positions 10 frames ahead",
                   _nbody_arguments, _run_nbody))
