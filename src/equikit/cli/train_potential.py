"""``equikit train potential``: fit a :class:`~equikit.models.Potential` (MACE-style) to
energies, forces and stresses with :func:`equikit.train.fit` (progress, checkpoints, exact
resume, seeds, early stopping, metrics CSV/JSON), with EMA weights, a learning-rate
schedule, and plots at the end.

    equikit train potential --config cfg.yaml --out runs/cu
    equikit train potential --config cfg.yaml --out runs/cu --resume
    equikit train potential --data emt-cu --epochs 50 --lr 1e-2 --out runs/cu

The YAML file is a :class:`~equikit.train.TrainConfig` (seed, epochs, lr, batch_size,
patience, budget_s, ...) whose ``extra`` mapping holds the task settings, the fields of
:class:`PotentialTrainConfig` (data, model, loss weights, EMA, schedule, splits). Files in
``--out``: ``checkpoint.pt``, ``best.pt``, ``metrics.csv``, ``config.yaml`` (from
:func:`~equikit.train.fit`), ``model.pt`` (the EMA weights of the best validation epoch,
:func:`~equikit.models.calculator.save_potential`), ``summary.json`` (fit result, validation
and test metrics), ``learning_curves.png`` and ``parity.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from equikit.cli.train import Task, config_from_args, register_task
from equikit.data.atoms import AtomsBatch, collate_atoms, read_ase_db, read_extxyz
from equikit.models.potential import Potential, PotentialConfig, average_num_neighbors, fit_reference_energies
from equikit.train import FitResult, TrainConfig, config_to_dict, fit, seed_everything, write_summary
from equikit.train.distributed import (
    DistributedContext,
    all_reduce_sums,
    broadcast_parameters,
    check_global_batch,
    close_distributed,
    init_distributed,
    shard,
)

#: built-in data recipes: ``emt-<element>`` (EMT metals, :class:`~equikit.data.atoms_md.EMTConfig`)
#: and ``mmff-<molecule>`` (MMFF94 molecules, :class:`~equikit.data.atoms_md.MMFFConfig`)
EMT_RECIPES = {"emt-cu": "Cu", "emt-ni": "Ni", "emt-al": "Al", "emt-cuni": "CuNi"}
SCHEDULES = ("none", "plateau", "cosine")
OPTIMIZERS = ("adam", "adamw")


@dataclass
class PotentialTrainConfig:
    """Task settings of ``equikit train potential`` (``TrainConfig.extra`` in a config file).

    Fields:
        data: an extxyz file (``.xyz``/``.extxyz``), an ASE database (``.db``), or a recipe
            ``emt-cu``/``emt-ni``/``emt-al``/``emt-cuni``/``mmff-<molecule>``.
        data_kwargs: fields of the recipe's ``EMTConfig``/``MMFFConfig`` (sizes, temperatures).
        root: data cache folder for recipes (default ``$EQUIKIT_DATA`` or the user cache).
        model: :class:`PotentialConfig` fields; ``atomic_numbers`` defaults to the elements of
            the data, ``e0`` to a least-squares fit on the training set, ``avg_num_neighbors``
            to the training set's value.
        val_fraction, test_fraction: shares of the frames held out (at least one frame each).
        split_seed: seed of the random split.
        energy_weight, forces_weight, stress_weight: weights of the per-atom energy MSE
            (eV^2/atom^2), the force MSE per component (eV^2/A^2) and the stress MSE per
            component ((eV/A^3)^2) in the loss.
        optimizer: ``"adam"`` or ``"adamw"`` (``TrainConfig.lr``/``weight_decay``).
        schedule: ``"none"``, ``"plateau"`` (ReduceLROnPlateau on ``val_loss`` with
            ``plateau_factor``/``plateau_patience`` evaluations) or ``"cosine"`` (to 0 over the epochs).
        ema_decay: exponential moving average of the weights after every step (with a
            warm-up, :class:`EMAPotential`); validation, test and ``model.pt`` use the EMA
            weights. ``None``: no EMA.
        eval_batch_size: structures per batch in evaluation.

    Example:
        >>> PotentialTrainConfig(data="emt-cu", forces_weight=100.0).schedule
        'plateau'
    """

    data: str = "emt-cu"
    data_kwargs: dict[str, Any] = field(default_factory=dict)
    root: str | None = None
    model: dict[str, Any] = field(default_factory=dict)
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    split_seed: int = 0
    energy_weight: float = 1.0
    forces_weight: float = 10.0
    stress_weight: float = 0.0
    optimizer: str = "adam"
    schedule: str = "plateau"
    plateau_factor: float = 0.5
    plateau_patience: int = 5
    ema_decay: float | None = 0.99
    eval_batch_size: int = 16

    def __post_init__(self) -> None:
        where = "PotentialTrainConfig"
        if not isinstance(self.data, str) or not self.data:
            raise TypeError(f"{where}: `data` must be a file path or a recipe name, got {self.data!r}")
        for name in ("data_kwargs", "model"):
            if not isinstance(getattr(self, name), dict):
                raise TypeError(f"{where}: `{name}` must be a mapping, got {type(getattr(self, name)).__name__}")
        for name in ("val_fraction", "test_fraction"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
                raise ValueError(f"{where}: `{name}` must be a number in [0, 1), got {v!r}")
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(f"{where}: `val_fraction` + `test_fraction` must be < 1, got "
                             f"{self.val_fraction} + {self.test_fraction}")
        for name in ("energy_weight", "forces_weight", "stress_weight"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0 or not math.isfinite(v):
                raise ValueError(f"{where}: `{name}` must be a finite number >= 0, got {v!r}")
        if self.energy_weight + self.forces_weight + self.stress_weight <= 0:
            raise ValueError(f"{where}: at least one of `energy_weight`, `forces_weight`, `stress_weight` must be > 0")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"{where}: `optimizer` must be one of {list(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"{where}: `schedule` must be one of {list(SCHEDULES)}, got {self.schedule!r}")
        if not 0 < self.plateau_factor < 1:
            raise ValueError(f"{where}: `plateau_factor` must be in (0, 1), got {self.plateau_factor!r}")
        for name in ("plateau_patience", "eval_batch_size", "split_seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name != "eval_batch_size" else 1):
                raise ValueError(f"{where}: `{name}` must be a non-negative int (eval_batch_size >= 1), got {v!r}")
        d = self.ema_decay
        if d is not None and (isinstance(d, bool) or not isinstance(d, (int, float)) or not 0 < d < 1):
            raise ValueError(f"{where}: `ema_decay` must be None or a number in (0, 1), got {d!r}")


def potential_settings(config: TrainConfig) -> PotentialTrainConfig:
    """The task settings in ``config.extra`` (an unknown key is an error naming it)."""
    names = {f.name for f in dataclasses.fields(PotentialTrainConfig)}
    unknown = sorted(set(config.extra) - names)
    if unknown:
        raise ValueError(f"train_potential: unknown `extra` keys {unknown}; known: {sorted(names)}")
    return PotentialTrainConfig(**config.extra)


# --------------------------------------------------------------------------- data
def load_frames(s: PotentialTrainConfig) -> AtomsBatch:
    """All labelled frames of ``s.data`` (float64; cast to the model's dtype later)."""
    where = "train_potential"
    name = s.data.lower()
    if name in EMT_RECIPES:
        from equikit.data.atoms_md import EMTConfig, load_emt

        kw = dict(s.data_kwargs)
        if "temperatures" in kw:
            kw["temperatures"] = tuple(kw["temperatures"])
        return load_emt(EMTConfig(element=EMT_RECIPES[name], **kw), root=s.root, progress=False)
    if name.startswith("mmff-"):
        from equikit.data.atoms_md import MMFFConfig, load_mmff

        kw = dict(s.data_kwargs)
        if "temperatures" in kw:
            kw["temperatures"] = tuple(kw["temperatures"])
        return load_mmff(MMFFConfig(molecule=s.data[5:], **kw), root=s.root, progress=False)
    path = Path(s.data)
    if not path.is_file():
        raise ValueError(f"{where}: `data` {s.data!r} is neither a file nor a recipe "
                         f"({sorted(EMT_RECIPES)} or 'mmff-<molecule>')")
    if path.suffix == ".db":
        return read_ase_db(path, require=("energy", "forces"))
    return read_extxyz(path, require=("energy", "forces"))


def split_frames(n: int, val_fraction: float, test_fraction: float, seed: int) -> dict[str, list[int]]:
    """A seeded random split of ``n`` frames into train / val / test index lists (val and
    test get at least one frame each when their fraction is > 0).

    Example:
        >>> parts = split_frames(10, 0.2, 0.1, seed=0)
        >>> [len(parts[k]) for k in ("train", "val", "test")], sorted(sum(parts.values(), [])) == list(range(10))
        ([7, 2, 1], True)
    """
    n_val = max(1, round(val_fraction * n)) if val_fraction > 0 else 0
    n_test = max(1, round(test_fraction * n)) if test_fraction > 0 else 0
    if n - n_val - n_test < 1:
        raise ValueError(f"split_frames: {n} frames leave no training frame after {n_val} val and {n_test} test")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return {"train": sorted(perm[n_val + n_test:]), "val": sorted(perm[:n_val]),
            "test": sorted(perm[n_val:n_val + n_test])}


def build_model_config(s: PotentialTrainConfig, train: AtomsBatch) -> PotentialConfig:
    """:class:`PotentialConfig` from ``s.model`` with the data-derived defaults filled in."""
    names = {f.name for f in dataclasses.fields(PotentialConfig)}
    unknown = sorted(set(s.model) - names)
    if unknown:
        raise ValueError(f"train_potential: unknown `model` fields {unknown}; known: {sorted(names)}")
    m = dict(s.model)
    m.setdefault("atomic_numbers", tuple(sorted(set(train.numbers.tolist()))))
    m["atomic_numbers"] = tuple(m["atomic_numbers"])
    for key in ("radial_mlp",):
        if key in m:
            m[key] = tuple(m[key])
    cutoff = float(m.get("cutoff", PotentialConfig.cutoff))
    if m.get("e0") is None:
        m["e0"] = fit_reference_energies(train, m["atomic_numbers"])
    m["e0"] = tuple(float(e) for e in m["e0"])
    m.setdefault("avg_num_neighbors", average_num_neighbors(train, cutoff))
    return PotentialConfig(**m)


# --------------------------------------------------------------------------- model + EMA
class EMAPotential(nn.Module):
    """A :class:`Potential` (``model``, trained) with an exponential moving average copy
    (``ema``) of its parameters: after the ``n``-th optimizer step (:meth:`update`, ``n = 1,
    2, ...``) ``ema <- d_n ema + (1 - d_n) model`` with the warm-up
    ``d_n = min(decay, n / (n + 9))`` (early steps weigh more, so a short run's average is not
    stuck at the initial weights). ``ema``, ``model`` and the step count ``ema_updates`` are in
    ``state_dict``, so checkpoints resume the average exactly. ``ema`` is ``None`` without
    EMA; :attr:`inference` is the model to use.

    Example:
        >>> cfg = PotentialConfig(hidden_irreps="2x0e + 2x1o", max_ell=1, correlation=1, radial_mlp=(4,),
        ...                       num_interactions=1)
        >>> w = EMAPotential(Potential(cfg), decay=0.9)
        >>> with torch.no_grad():
        ...     _ = w.model.embedding.add_(1.0)
        >>> w.update()  # first step: d_1 = 0.1
        >>> bool(torch.allclose(w.ema.embedding, w.model.embedding - 0.1))
        True
    """

    def __init__(self, model: Potential, decay: float | None) -> None:
        super().__init__()
        self.model = model
        self.decay = decay
        self.ema = None
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))
        if decay is not None:
            import copy

            self.ema = copy.deepcopy(model)
            self.ema.requires_grad_(False)

    @property
    def inference(self) -> Potential:
        return self.ema if self.ema is not None else self.model

    @torch.no_grad()
    def update(self) -> None:
        if self.ema is None:
            return
        self.ema_updates += 1
        n = int(self.ema_updates)
        d = min(self.decay, n / (n + 9))
        for e, p in zip(self.ema.parameters(), self.model.parameters()):
            e.mul_(d).add_(p.detach(), alpha=1.0 - d)


# --------------------------------------------------------------------------- loss and metrics
@dataclass
class BatchShard:
    """One rank's part of a global batch in data parallel training (:mod:`equikit.train.distributed`):
    ``batch`` (``None`` when a short last batch leaves this rank nothing) and the global batch's
    ``num_structures``, ``num_atoms`` and ``periodic`` (every structure periodic), by which
    :func:`potential_loss` normalises, and the ``world_size``."""

    batch: AtomsBatch | None
    num_structures: int
    num_atoms: int
    periodic: bool
    world_size: int


def potential_loss(model: Potential, batch: AtomsBatch | BatchShard, s: PotentialTrainConfig,
                   training: bool = True) -> torch.Tensor:
    r"""``w_E mean_s ((E_s - E*_s) / n_s)^2 + w_F mean_{i,a} (F_ia - F*_ia)^2
    + w_S mean_{s,ab} (S_sab - S*_sab)^2`` (terms with weight 0 or without labels skipped).

    For a :class:`BatchShard` (rank ``r`` of ``W``) each mean becomes this rank's sum divided
    by the *global* count (structures, ``3 x`` atoms, ``9 x`` structures) times ``W``: the
    mean over the ranks of these losses, which is what the gradient all-reduce averages, is
    the loss of the whole global batch even when the shards hold different numbers of atoms.
    """
    scale, periodic = None, None
    if isinstance(batch, BatchShard):
        w, periodic = batch.world_size, batch.periodic
        scale = (w / batch.num_structures, w / (3 * batch.num_atoms), w / (9 * batch.num_structures))
        if batch.batch is None:  # nothing here: a zero loss that still reaches every parameter
            return sum((p.sum() * 0 for p in model.parameters()), torch.zeros((), dtype=model.e0.dtype))
        batch = batch.batch
    periodic = bool(batch.pbc.all()) if periodic is None else periodic

    def reduce(err: torch.Tensor, k: int) -> torch.Tensor:
        return err.pow(2).mean() if scale is None else err.pow(2).sum() * scale[k]

    use_f = s.forces_weight > 0 and batch.forces is not None
    use_s = s.stress_weight > 0 and batch.stress is not None and periodic
    out = model(batch, compute_forces=use_f, compute_stress=use_s, training=training)
    n = batch.natoms.to(out["energy"].dtype)
    loss = out["energy"].new_zeros(())
    if s.energy_weight > 0:
        loss = loss + s.energy_weight * reduce((out["energy"] - batch.energy) / n, 0)
    if use_f:
        loss = loss + s.forces_weight * reduce(out["forces"] - batch.forces, 1)
    if use_s:
        loss = loss + s.stress_weight * reduce(out["stress"] - batch.stress, 2)
    return loss


def _chunks(frames: AtomsBatch, size: int):
    for k in range(0, len(frames), size):
        yield frames[list(range(k, min(k + size, len(frames))))]


def predict(model: Potential, frames: AtomsBatch, batch_size: int = 16) -> dict[str, torch.Tensor]:
    """Energies ``(B,)``, forces ``(N, 3)`` and (periodic frames) stresses ``(B, 3, 3)`` of
    ``model`` on ``frames``, detached, float64."""
    want_stress = bool(frames.pbc.all())
    parts: dict[str, list[torch.Tensor]] = {"energy": [], "forces": [], "stress": []}
    was = model.training
    model.eval()
    for b in _chunks(frames, batch_size):
        out = model(b, compute_forces=True, compute_stress=want_stress)
        for k in parts:
            if k in out:
                parts[k].append(out[k].detach().double())
    model.train(was)
    return {k: torch.cat(v) for k, v in parts.items() if v}


def _error_sums(model: Potential, frames: AtomsBatch, s: PotentialTrainConfig, stress: bool) -> dict[str, float]:
    """Sums of absolute and squared errors and their counts on ``frames`` (zeros when empty)."""
    sums = dict.fromkeys(("n_e", "e_abs", "e_sq", "n_f", "f_abs", "f_sq", "n_s", "s_sq"), 0.0)
    if len(frames) == 0:
        return sums
    p = predict(model, frames, s.eval_batch_size)
    de = (p["energy"] - frames.energy.double()) / frames.natoms.double()
    df = p["forces"] - frames.forces.double()
    sums.update(n_e=de.numel(), e_abs=float(de.abs().sum()), e_sq=float(de.pow(2).sum()), n_f=df.numel(),
                f_abs=float(df.abs().sum()), f_sq=float(df.pow(2).sum()))
    if stress:
        ds = p["stress"] - frames.stress.double()
        sums.update(n_s=ds.numel(), s_sq=float(ds.pow(2).sum()))
    return sums


def potential_metrics(model: Potential, frames: AtomsBatch, s: PotentialTrainConfig, prefix: str,
                      distributed: DistributedContext | None = None) -> dict[str, float]:
    """``{prefix}_loss`` (the training loss), ``{prefix}_energy_mae_per_atom`` (eV/atom),
    ``{prefix}_energy_rmse_per_atom``, ``{prefix}_forces_mae``, ``{prefix}_forces_rmse`` (eV/A) and,
    with stress labels, ``{prefix}_stress_rmse`` (eV/A^3). With ``distributed`` (several ranks)
    each rank predicts its :func:`~equikit.train.distributed.shard` of ``frames`` and the error
    sums are added over the ranks, so every rank returns the metrics of all of ``frames``."""
    ctx = distributed if distributed is not None else DistributedContext()
    stress = frames.stress is not None and bool(frames.pbc.all())
    part = frames[shard(range(len(frames)), ctx)] if ctx.enabled else frames
    t = all_reduce_sums(_error_sums(model, part, s, stress), ctx)
    e_mse, f_mse = t["e_sq"] / t["n_e"], t["f_sq"] / t["n_f"]
    out = {f"{prefix}_energy_mae_per_atom": t["e_abs"] / t["n_e"], f"{prefix}_energy_rmse_per_atom": math.sqrt(e_mse),
           f"{prefix}_forces_mae": t["f_abs"] / t["n_f"], f"{prefix}_forces_rmse": math.sqrt(f_mse)}
    loss = s.energy_weight * e_mse + s.forces_weight * f_mse
    if stress:
        out[f"{prefix}_stress_rmse"] = math.sqrt(t["s_sq"] / t["n_s"])
        loss += s.stress_weight * t["s_sq"] / t["n_s"]
    return {f"{prefix}_loss": loss, **out}


# --------------------------------------------------------------------------- plots
def write_plots(out_dir: Path, metrics_rows: list[dict[str, float]], model: Potential, test: AtomsBatch,
                batch_size: int = 16) -> list[Path]:
    """``learning_curves.png`` (train and validation loss per epoch, log scale) and
    ``parity.png`` (energy per atom and force components, predicted vs reference, on ``test``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(5, 3.5))
    epochs = [r["epoch"] for r in metrics_rows]
    for key in ("train_loss", "val_loss"):
        ax.plot(epochs, [r[key] for r in metrics_rows], label=key, marker=".")
    ax.set(xlabel="epoch", ylabel="loss", yscale="log", title="learning curves")
    ax.legend()
    fig.tight_layout()
    paths.append(out_dir / "learning_curves.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    p = predict(model, test, batch_size)
    n = test.natoms.double()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    pairs = (((test.energy.double() / n).numpy(), (p["energy"] / n).numpy(), "energy (eV/atom)"),
             (test.forces.double().reshape(-1).numpy(), p["forces"].reshape(-1).numpy(), "force components (eV/A)"))
    for ax, (ref, pred, label) in zip(axes, pairs):
        ax.scatter(ref, pred, s=4, alpha=0.6)
        lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set(xlabel=f"reference {label}", ylabel=f"predicted {label}", title="test parity")
    fig.tight_layout()
    paths.append(out_dir / "parity.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths


# --------------------------------------------------------------------------- training
def train_potential(config: TrainConfig, out_dir: str | Path | None = None, *, resume: bool = False,
                    frames: AtomsBatch | None = None,
                    distributed: DistributedContext | None = None) -> dict[str, Any]:
    """Train a :class:`Potential` as ``config`` says (task settings in ``config.extra``,
    :class:`PotentialTrainConfig`); returns the summary (also ``out_dir/summary.json``): the
    :class:`~equikit.train.FitResult` fields, the validation metrics of the best epoch, the
    test metrics of its EMA weights, ``parameters``, ``sizes``, ``model_config``. With
    ``out_dir``: also ``model.pt``, ``learning_curves.png``, ``parity.png``.
    ``frames`` replaces ``data`` (labelled frames in memory). ``distributed``
    (:func:`~equikit.train.distributed.init_distributed` under ``torchrun``): data parallel
    training, each rank on its shard of every global batch of ``config.batch_size``
    structures (which must divide by the world size), with the result of single-process
    training on the same global batches; only rank 0 writes files.

    Example:
        >>> import torch
        >>> from equikit.data.atoms import AtomsBatch
        >>> g = torch.Generator().manual_seed(0)
        >>> pos = torch.rand(12, 3, generator=g, dtype=torch.float64) * 3
        >>> frames = AtomsBatch.from_arrays(positions=pos, numbers=[29] * 12, natoms=[3] * 4,
        ...                                 energy=torch.rand(4, dtype=torch.float64, generator=g),
        ...                                 forces=torch.zeros(12, 3, dtype=torch.float64))
        >>> cfg = TrainConfig(epochs=2, batch_size=2, lr=1e-3, verbose=False, progress=False,
        ...                   extra={"val_fraction": 0.25, "test_fraction": 0.25, "model": {
        ...                       "hidden_irreps": "2x0e + 2x1o", "max_ell": 1, "correlation": 1,
        ...                       "radial_mlp": [4], "num_interactions": 1}})
        >>> out = train_potential(cfg, frames=frames)
        >>> out["steps"], out["sizes"]
        (2, {'train': 2, 'val': 1, 'test': 1})
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"train_potential: `config` must be a TrainConfig, got {type(config).__name__}")
    ctx = distributed if distributed is not None else DistributedContext()
    if not isinstance(ctx, DistributedContext):
        raise TypeError(f"train_potential: `distributed` must be a DistributedContext or None, "
                        f"got {type(distributed).__name__}")
    check_global_batch(config.batch_size, ctx, "train_potential")
    s = potential_settings(config)
    if frames is None:
        frames = load_frames(s)
    if not isinstance(frames, AtomsBatch) or frames.energy is None or frames.forces is None:
        raise ValueError("train_potential: `frames` must be an AtomsBatch with energy and forces labels")
    parts = split_frames(len(frames), s.val_fraction, s.test_fraction, s.split_seed)
    train_f = frames[parts["train"]]
    mcfg = build_model_config(s, train_f)
    dtype = torch.float64 if mcfg.dtype == "float64" else torch.float32
    train_f, val_f, test_f = (frames[parts[k]].to(dtype=dtype) for k in ("train", "val", "test"))
    if len(val_f) == 0:
        val_f = train_f  # no held-out frames: monitor the training set
    seed_everything(config.seed)
    wrapper = EMAPotential(Potential(mcfg), s.ema_decay)
    broadcast_parameters(wrapper, ctx)
    params = list(wrapper.model.parameters())
    opt_cls = torch.optim.AdamW if s.optimizer == "adamw" else torch.optim.Adam
    opt = opt_cls(params, lr=config.lr, weight_decay=config.weight_decay)
    opt.register_step_post_hook(lambda *_: wrapper.update())
    scheduler = None
    if s.schedule == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=s.plateau_factor,
                                                               patience=s.plateau_patience)
    elif s.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.epochs)
    singles = [train_f[i] for i in range(len(train_f))]
    natoms = train_f.natoms.tolist()
    periodic = train_f.pbc.all(dim=1).tolist()

    def batches(epoch, gen):
        order = torch.randperm(len(singles), generator=gen).tolist()
        for k in range(0, len(order), config.batch_size):
            chosen = order[k:k + config.batch_size]
            if not ctx.enabled:
                yield collate_atoms([singles[i] for i in chosen])
                continue
            mine = shard(chosen, ctx)
            yield BatchShard(collate_atoms([singles[i] for i in mine]) if mine else None, len(chosen),
                             sum(natoms[i] for i in chosen), all(periodic[i] for i in chosen), ctx.world_size)

    result: FitResult = fit(wrapper, opt, batches, lambda m, b: potential_loss(m.model, b, s), config,
                            evaluate=lambda m: potential_metrics(m.inference, val_f, s, "val", ctx),
                            scheduler=scheduler, out_dir=out_dir, resume=resume, distributed=ctx)
    if result.best_state is not None:
        wrapper.load_state_dict(result.best_state)
    final = wrapper.inference
    test = potential_metrics(final, test_f, s, "test", ctx) if len(test_f) else {}
    summary = {**result.summary(), "parameters": final.count_parameters(),
               **{k: v for k, v in result.best_metrics.items() if k.startswith("val_")}, **test,
               "sizes": {k: len(v) for k, v in parts.items()}, "ema": s.ema_decay is not None,
               "model_config": mcfg.to_dict(), "world_size": ctx.world_size}
    if out_dir is not None and ctx.is_main:
        from equikit.models.calculator import save_potential
        from equikit.train import MetricsLog

        out = Path(out_dir)
        save_potential(final, out / "model.pt")
        rows = MetricsLog(out / "metrics.csv").read()
        plots = write_plots(out, rows, final, test_f if len(test_f) else val_f, s.eval_batch_size)
        summary["files"] = ["model.pt", "metrics.csv", "summary.json", *(p.name for p in plots)]
        write_summary(out / "summary.json", {**summary, "config": config_to_dict(config)})
    return summary


# --------------------------------------------------------------------------- CLI
POTENTIAL_CONFIG = TrainConfig(epochs=100, lr=1e-2, batch_size=4, eval_every=1, monitor="val_loss",
                               extra={"data": "emt-cu"})


def _potential_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, help="extxyz / ASE .db file or recipe (emt-cu, mmff-ethanol, ...)")
    p.add_argument("--energy-weight", type=float, default=None)
    p.add_argument("--forces-weight", type=float, default=None)
    p.add_argument("--stress-weight", type=float, default=None)
    p.add_argument("--ema-decay", type=float, default=None)
    p.add_argument("--schedule", choices=SCHEDULES, default=None)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=None)
    p.add_argument("--split-seed", type=int, default=None)
    p.add_argument("--root", default=None, help="data cache for recipes")
    p.add_argument("--model-kwargs", type=json.loads, default=None, metavar="JSON",
                   help='PotentialConfig fields, e.g. \'{"hidden_irreps": "16x0e + 16x1o"}\'')


def _run_potential(args: argparse.Namespace) -> int:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    cfg = config_from_args(args, POTENTIAL_CONFIG, {
        "data": args.data, "energy_weight": args.energy_weight, "forces_weight": args.forces_weight,
        "stress_weight": args.stress_weight, "ema_decay": args.ema_decay, "schedule": args.schedule,
        "optimizer": args.optimizer, "split_seed": args.split_seed, "root": args.root})
    if args.model_kwargs is not None:
        extra = dict(cfg.extra)
        extra["model"] = {**extra.get("model", {}), **args.model_kwargs}
        cfg = TrainConfig(**{**cfg.__dict__, "extra": extra})
    ctx = init_distributed()  # torchrun: join its process group; plain python: one process
    try:
        out = train_potential(cfg, args.out, resume=args.resume, distributed=ctx)
    finally:
        close_distributed(ctx)
    keys = ("epochs", "steps", "seconds", "stop_reason", "best_epoch", "parameters", "world_size")
    shown = {k: out[k] for k in keys} | {k: v for k, v in out.items() if k.startswith(("val_", "test_"))}
    if ctx.is_main:
        print(json.dumps(shown), file=sys.stdout, flush=True)
    return 0


POTENTIAL_TASK = register_task(Task(
    "potential", "MACE-style interatomic potential on energies/forces/stresses (extxyz, ASE db, EMT/MMFF recipes)",
    _potential_arguments, _run_potential))
