"""The training configuration: a typed dataclass with YAML load/save."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

C = TypeVar("C")


@dataclass
class TrainConfig:
    """Settings of :func:`equikit.train.fit` (the task-independent part of a run).

    Args:
        seed: seeds the per-epoch shuffling generator (``seed``, ``epoch``) and, through
            :func:`seed_everything`, the model initialisation.
        epochs: epochs to train (an epoch is one pass over ``batches(epoch, generator)``).
        lr, weight_decay: for the optimizer the caller builds (recorded here).
        batch_size: recorded for the batch factory the caller builds.
        max_steps: stop (and checkpoint) after this many optimizer steps in total; ``None``
            for no limit. Used to split a run into pieces; resuming continues exactly.
        budget_s: stop (evaluate, checkpoint) after this many seconds of wall clock, summed
            over resumed pieces; ``None`` for no limit.
        eval_every: evaluate every this many epochs (and at the end).
        monitor: the metric returned by ``evaluate`` that picks the best epoch.
        mode: ``"min"`` or ``"max"`` for ``monitor``.
        patience: early stopping after this many evaluations without improvement by more
            than ``min_delta``; ``None`` disables it.
        min_delta: the improvement that counts.
        checkpoint_every: write ``checkpoint.pt`` every this many epochs (and at the end).
        grad_clip: clip the gradient norm to this value; ``None`` disables it.
        progress: tqdm progress bar; ``None``: only when stderr is a terminal.
        verbose: one line per evaluation on stderr.
        extra: task-specific settings (model name, widths, data sizes, ...), free form.

    Example:
        >>> cfg = TrainConfig(epochs=3, extra={"model": "egnn"})
        >>> cfg.mode, cfg.extra["model"]
        ('min', 'egnn')
    """

    seed: int = 0
    epochs: int = 100
    lr: float = 5e-4
    weight_decay: float = 0.0
    batch_size: int = 100
    max_steps: int | None = None
    budget_s: float | None = None
    eval_every: int = 1
    monitor: str = "val_loss"
    mode: str = "min"
    patience: int | None = None
    min_delta: float = 0.0
    checkpoint_every: int = 1
    grad_clip: float | None = None
    progress: bool | None = None
    verbose: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_config(self)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def validate_config(cfg: TrainConfig) -> None:
    """Raise ValueError/TypeError naming the field when ``cfg`` cannot drive a run."""
    where = "TrainConfig"
    for name in ("seed", "epochs", "batch_size", "eval_every", "checkpoint_every"):
        v = getattr(cfg, name)
        if not _is_int(v):
            raise TypeError(f"{where}: `{name}` must be an int, got {type(v).__name__} {v!r}")
    for name in ("epochs", "batch_size", "eval_every", "checkpoint_every"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{where}: `{name}` must be >= 1, got {getattr(cfg, name)}")
    for name in ("max_steps", "patience"):
        v = getattr(cfg, name)
        if v is not None and (not _is_int(v) or v < 1):
            raise ValueError(f"{where}: `{name}` must be None or an int >= 1, got {v!r}")
    for name in ("budget_s", "grad_clip"):
        v = getattr(cfg, name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0):
            raise ValueError(f"{where}: `{name}` must be None or a number > 0, got {v!r}")
    if cfg.mode not in ("min", "max"):
        raise ValueError(f"{where}: `mode` must be 'min' or 'max', got {cfg.mode!r}")
    if not isinstance(cfg.extra, dict):
        raise TypeError(f"{where}: `extra` must be a dict, got {type(cfg.extra).__name__}")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass config as a plain dict (nested dataclasses included)."""
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"config_to_dict: `cfg` must be a dataclass instance, got {type(cfg).__name__}")
    return dataclasses.asdict(cfg)


def config_from_dict(cls: type[C], data: dict[str, Any]) -> C:
    """Build the dataclass ``cls`` from ``data``; an unknown key is an error (a typo in a
    config file must not be silently ignored)."""
    if not isinstance(data, dict):
        raise TypeError(f"config_from_dict: `data` must be a dict, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(
            f"config_from_dict: unknown keys {unknown} for {cls.__name__}; known keys: {sorted(names)}"
        )
    return cls(**data)


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write a dataclass config as YAML (atomically)."""
    import yaml

    from equikit.train._checkpoint import atomic_write_bytes

    path = Path(path)
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
    atomic_write_bytes(path, text.encode())
    return path


def load_config(path: str | Path, cls: type[C] = TrainConfig, overrides: dict[str, Any] | None = None) -> C:
    """Read a YAML file into the dataclass ``cls``; ``overrides`` replace keys after loading.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "cfg.yaml"
        >>> _ = save_config(TrainConfig(epochs=7), p)
        >>> load_config(p, overrides={"seed": 3}).epochs, load_config(p, overrides={"seed": 3}).seed
        (7, 3)
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"load_config: `path` {str(path)!r} is not a file")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"load_config: {str(path)!r} must hold a mapping, got {type(data).__name__}")
    data.update(overrides or {})
    return config_from_dict(cls, data)
