"""The n-body training task (``equikit train nbody``): a dynamics model predicts the positions
at ``frame_out`` from the state at ``frame_in`` (EGNN protocol, DESIGN §6), trained with
:func:`equikit.train.fit`.

Task settings live in ``TrainConfig.extra`` (defaults in :data:`NBODY_DEFAULTS`):
``model`` (one of :data:`NBODY_MODELS`), ``model_kwargs`` (passed to the model class),
``n_train`` (first simulations of the train split, 3000), ``n_val_eval`` (validation
simulations used for model selection, all 2000 by default), ``frame_in``/``frame_out``
(30/40), ``data`` (overrides of :class:`~equikit.data.nbody.ChargedNBodyConfig`, e.g. a
small recipe for tests; ``{}`` is the protocol) and ``device`` (``"cpu"``, ``"cuda"``, ...: the
model and all three splits are moved there once; shuffling stays on the CPU generator, so a
run's batch order is the same on every device). The test MSE is computed once, for the
weights of the best validation epoch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from equikit.data.nbody import ChargedNBodyConfig, NBodyDataset, load_charged_nbody
from equikit.models import EGNN, FAGNN, GNN, EqMotion, LinearDynamics, Ponita
from equikit.train._checkpoint import seed_everything
from equikit.train._config import TrainConfig
from equikit.train._loop import FitResult, fit
from equikit.train._metrics import write_summary

NBODY_MODELS: dict[str, Callable[..., nn.Module]] = {
    "linear": LinearDynamics,
    "gnn": GNN,
    "egnn": EGNN,
    "fa_gnn": FAGNN,
    "ponita": Ponita,
    "eqmotion": EqMotion,
}
# published test MSE (charged n-body, 3000 training simulations): Satorras et al. 2021 (linear,
# GNN, EGNN), Puny et al. 2022 (FA-GNN), Bekkers et al. 2024 (PONITA); EqMotion did not report
# this protocol
NBODY_PUBLISHED = {"linear": 0.0819, "gnn": 0.0107, "egnn": 0.0071, "fa_gnn": 0.0057, "ponita": 0.0043,
                   "eqmotion": None, "segnn": 0.0043}
NBODY_DEFAULTS: dict[str, Any] = {"model": "egnn", "model_kwargs": {}, "n_train": 3000, "n_val_eval": None,
                                  "frame_in": 30, "frame_out": 40, "data": {}, "device": "cpu"}


def nbody_settings(config: TrainConfig) -> dict[str, Any]:
    """``config.extra`` over :data:`NBODY_DEFAULTS`, validated."""
    unknown = sorted(set(config.extra) - set(NBODY_DEFAULTS))
    if unknown:
        raise ValueError(f"train_nbody: unknown `extra` keys {unknown}; known: {sorted(NBODY_DEFAULTS)}")
    s = {**NBODY_DEFAULTS, **config.extra}
    if s["model"] not in NBODY_MODELS:
        raise ValueError(f"train_nbody: `model` must be one of {sorted(NBODY_MODELS)}, got {s['model']!r}")
    try:
        torch.device(s["device"])
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"train_nbody: `device` must name a torch device such as 'cpu' or 'cuda', "
                         f"got {s['device']!r}") from exc
    return s


def build_nbody_model(name: str, **kwargs: Any) -> nn.Module:
    """The model ``name`` of :data:`NBODY_MODELS` with ``kwargs``.

    Example:
        >>> type(build_nbody_model("egnn", hidden=8, n_layers=1)).__name__
        'EGNN'
    """
    if name not in NBODY_MODELS:
        raise ValueError(f"build_nbody_model: `name` must be one of {sorted(NBODY_MODELS)}, got {name!r}")
    return NBODY_MODELS[name](**kwargs)


def load_nbody_splits(settings: dict[str, Any], root=None, dtype=torch.float32) -> dict[str, NBodyDataset]:
    """Train (first ``n_train``), validation (first ``n_val_eval``) and test datasets."""
    splits = load_charged_nbody(ChargedNBodyConfig(**settings["data"]), root=root)
    kw = {"frame_in": settings["frame_in"], "frame_out": settings["frame_out"], "dtype": dtype}
    train = splits["train"].head(settings["n_train"]) if settings["n_train"] else splits["train"]
    val = splits["val"].head(settings["n_val_eval"]) if settings["n_val_eval"] else splits["val"]
    return {"train": NBodyDataset(trajectories=train, **kw), "val": NBodyDataset(trajectories=val, **kw),
            "test": NBodyDataset(trajectories=splits["test"], **kw)}


def nbody_batches(ds: NBodyDataset, batch_size: int, shuffle: bool, generator: torch.Generator | None = None):
    """Collated batches (as :func:`~equikit.data.nbody.collate_nbody` makes them, indexed from
    the dataset's tensors by :meth:`~equikit.data.nbody.NBodyDataset.batch`); shuffled with
    ``generator`` and dropping the last partial batch when ``shuffle`` (training), in order and
    complete otherwise."""
    n = len(ds)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if shuffle and n >= batch_size else n
    for k in range(0, stop, batch_size):
        yield ds.batch(order[k : k + batch_size])


def predict_nbody(model: nn.Module, batch) -> torch.Tensor:
    """A model's predicted positions for a collated batch."""
    return model(batch.pos, batch.vel, batch.edge_index, batch.edge_attr)


def nbody_mse(model: nn.Module, ds: NBodyDataset, batch_size: int = 500) -> float:
    """Mean squared error of the predicted positions over ``ds`` (eval mode, no grad)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for b in nbody_batches(ds, batch_size, shuffle=False):
            total += float(torch.nn.functional.mse_loss(predict_nbody(model, b), b.target)) * b.num_graphs
            count += b.num_graphs
    model.train(was_training)
    return total / max(count, 1)


def train_nbody(config: TrainConfig, out_dir: str | Path | None = None, *, resume: bool = False, root=None,
                data: dict[str, NBodyDataset] | None = None) -> dict[str, Any]:
    """Train one n-body model as ``config`` says; returns the summary (also written to
    ``out_dir/summary.json``; the validation metric is ``val_loss``, the MSE):
    the :class:`~equikit.train.FitResult` fields plus ``test_mse``
    (at the best validation epoch), ``val_mse``, ``model``, ``parameters``, ``published``.

    Example:
        >>> from equikit.train import TrainConfig
        >>> cfg = TrainConfig(epochs=2, batch_size=2, verbose=False, progress=False,
        ...                   extra={"model": "linear", "n_train": 4, "frame_in": 2, "frame_out": 4,
        ...                          "data": {"n_train": 4, "n_val": 2, "n_test": 2, "steps": 300,
        ...                                   "sample_every": 50}})
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     out = train_nbody(cfg, root=d)
        >>> out["steps"], out["model"]
        (4, 'linear')
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"train_nbody: `config` must be a TrainConfig, got {type(config).__name__}")
    s = nbody_settings(config)
    data = data if data is not None else load_nbody_splits(s, root=root)
    device = torch.device(s["device"])
    data = {k: ds.to(device) for k, ds in data.items()}
    seed_everything(config.seed)
    model = build_nbody_model(s["model"], **s["model_kwargs"]).to(device)
    # the fused kernel: the same Adam update (to rounding) in one pass over all parameters
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=True)

    def batches(epoch, gen):
        return nbody_batches(data["train"], config.batch_size, shuffle=True, generator=gen)

    def loss_fn(m, b):
        return torch.nn.functional.mse_loss(predict_nbody(m, b), b.target)

    def evaluate(m):
        return {"val_loss": nbody_mse(m, data["val"])}

    result: FitResult = fit(model, opt, batches, loss_fn, config, evaluate=evaluate, out_dir=out_dir, resume=resume)
    if result.best_state is not None:
        model.load_state_dict(result.best_state)
    t0 = time.perf_counter()
    test = nbody_mse(model, data["test"])
    summary = {**result.summary(), "model": s["model"], "test_mse": test,
               "val_mse": result.best_metrics.get("val_loss"),
               "test_eval_seconds": round(time.perf_counter() - t0, 3),
               "parameters": sum(p.numel() for p in model.parameters()), "published": NBODY_PUBLISHED[s["model"]]}
    if out_dir is not None:
        from equikit.train._config import config_to_dict

        write_summary(Path(out_dir) / "summary.json", {**summary, "config": config_to_dict(config)})
    summary["best_state"] = result.best_state
    return summary
