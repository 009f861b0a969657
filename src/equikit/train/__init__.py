"""Training core shared by the ``equikit train`` tasks: a typed config with YAML, seeding,
atomic checkpoints with RNG states, a loop that resumes bit for bit, metrics (CSV + JSON),
early stopping and a progress bar. See docs/train.md."""

from equikit.train._checkpoint import (
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)
from equikit.train._config import TrainConfig, config_from_dict, config_to_dict, load_config, save_config
from equikit.train._loop import FitResult, epoch_generator, fit
from equikit.train._metrics import EarlyStopping, MetricsLog, write_summary

__all__ = [
    "EarlyStopping",
    "FitResult",
    "MetricsLog",
    "TrainConfig",
    "config_from_dict",
    "config_to_dict",
    "epoch_generator",
    "fit",
    "get_rng_state",
    "load_checkpoint",
    "load_config",
    "save_checkpoint",
    "save_config",
    "seed_everything",
    "set_rng_state",
    "write_summary",
]
