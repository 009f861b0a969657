"""Accuracy of equikit's MACE-style potential against mace-torch at an equal training budget.

Issue 7, benchmarks 1 and 2: "MD17-lite" (MMFF94 Langevin MD of MD17 molecules, energy and
force MAE) and EMT copper temperature transfer (train on 300 K frames, test at 300, 600 and
1200 K: energy, force and stress RMSE; NVE drift of a short MD run with each model). Both
codes are trained from the same extxyz files with their own command lines, with matched
sizes and settings from ``benchmarks/configs/atoms_mace_accuracy.yaml`` (same batches per
epoch and epochs, so the same number of gradient steps), one at a time, one thread each.
Then one script evaluates both through their ASE calculators on the same test frames.

Three stages (the third runs in the mace-torch venv, where equikit is imported from ``src/``)::

    .venv/bin/python benchmarks/atoms_mace_accuracy.py prepare      # data (extxyz) + run configs
    nice -n 5 .venv/bin/python benchmarks/atoms_mace_accuracy.py train   # equikit, then mace_run_train, per data set
    .venv-mace/bin/python benchmarks/atoms_mace_accuracy.py evaluate  # both ASE calculators, NVE, report

``train`` is resumable (a finished run is skipped; an interrupted equikit run continues with
``--resume``, mace-torch with ``--restart_latest``) and writes the PID of the process that is
computing to ``--pid-file`` (the long-job rule of the shared machine: SIGSTOP/SIGCONT it).
Work files go to ``--work`` (default ``data/atoms_mace_accuracy``, git-ignored); results to
``benchmarks/results/atoms_mace_accuracy.{json,md,png}`` (``--name`` for another file name).

A variant may also carry ``grid_options`` (the session-7 :class:`~equikit.nn.SphereGridMLP`
options that :class:`~equikit.models.PotentialConfig` does not expose yet: ``output``,
``per_element``, ``linear``; see :func:`install_grid_options`) and ``train_settings`` (per-model
overrides of ``lr`` / ``ema_decay``); runs with ``grid_options`` train through this script
(``train-one``), which installs the option before calling ``equikit train potential``, and
``evaluate`` installs it before loading such a model.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))
CONFIG = ROOT / "benchmarks" / "configs" / "atoms_mace_accuracy.yaml"
WORK = ROOT / "data" / "atoms_mace_accuracy"
VENV = ROOT / ".venv" / "bin"
VENV_MACE = ROOT / ".venv-mace" / "bin"
NAME = "atoms_mace_accuracy"
DATA_FILES = ("train_val.xyz", "mace_train.xyz", "mace_valid.xyz", "test.xyz")
#: the evaluation's name of mace-torch beside equikit's variant names
MACE = "mace_torch"


def load_settings(path: Path = CONFIG) -> dict:
    import yaml

    with open(path) as fh:
        return yaml.safe_load(fh)


# --------------------------------------------------------------------------- grid options (session 7)
#: the grid options the next Potential built in this process uses (set by :func:`use_grid_options`)
_GRID_OPTIONS: dict = {}
GRID_OPTION_KEYS = ("output", "per_element", "linear", "input_scale", "act_coefficients", "output_scale", "cond_scale",
                    "element_skip", "element_mix", "path_linear", "radial_e3nn", "linear_e3nn")
#: the session-8 architecture prototypes among them (:func:`_install_architecture_options`)
ARCH_OPTION_KEYS = ("element_skip", "element_mix", "path_linear", "radial_e3nn", "linear_e3nn")


def use_grid_options(options: dict | None) -> None:
    """Make the next :class:`~equikit.models.Potential` built in this process use ``options``
    (``{"output": "grid" | "degree", "per_element": bool, "linear": bool, "input_scale": float,
    "act_coefficients": [a_1, ..., a_correlation]}``; None / {}: none)."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(GRID_OPTION_KEYS))
    if unknown:
        raise ValueError(f"atoms_mace_accuracy: unknown grid_options {unknown}; known: {list(GRID_OPTION_KEYS)}")
    install_grid_options()
    _GRID_OPTIONS.clear()
    _GRID_OPTIONS.update(options)


def install_grid_options() -> None:
    """Replace ``equikit.models.potential.Interaction`` by a subclass whose grid MLP (``product:
    grid_mlp``) is rebuilt with the :class:`~equikit.nn.SphereGridMLP` options in
    ``_GRID_OPTIONS``: ``output`` (``"degree"``: the last layer per output degree), ``per_element``
    (``num_groups = len(atomic_numbers)``, each atom's element picks its weights), ``linear`` (the
    linear path), ``input_scale`` / ``output_scale`` (SphereGridMLP's constant factors on its input
    and output, so the polynomial's higher powers weigh more at the same weights); experiments of
    this script only: ``act_coefficients`` (the ``a_k`` of ``sum_k a_k t^k / k!``, fixed) and
    ``cond_scale`` (a constant factor on the conditioning shift, ``grid_condition``). Without options
    the subclass builds exactly the original layer. The session-7 runs were trained with it;
    ``PotentialConfig.grid_gain`` / ``grid_output`` now give the same model for ``facet_gain_el``
    (tests/models/test_accuracy_grid_options.py)."""
    import equikit.models.potential as pot
    from equikit.nn import SphereGridMLP

    if getattr(pot.Interaction, "_grid_options_patch", False):
        return

    class GroupedGridMLP(SphereGridMLP):
        """SphereGridMLP with this script's experiment-only options ``cond_scale`` and
        ``act_coefficients`` (the input / output scales are SphereGridMLP's own; ``Interaction``
        passes each atom's element as ``group``)."""

        cond_scale = 1.0
        act_coefficients = None

        def forward(self, x, bias=None, act=None, group=None, pre=None, pre_scale=1.0):
            if self.act_coefficients is not None and act is None:
                act = functools.partial(self.act, coefficients=x.new_tensor(self.act_coefficients))
            if bias is not None and self.cond_scale != 1.0:
                bias = bias * self.cond_scale
            return super().forward(x, bias, act, group=group if self.num_groups > 1 else None, pre=pre,
                                   pre_scale=pre_scale)

    class Interaction(pot.Interaction):
        _grid_options_patch = True

        def __init__(self, cfg, irreps_in, irreps_out, skip):
            super().__init__(cfg, irreps_in, irreps_out, skip)
            opts = dict(_GRID_OPTIONS)
            _install_architecture_options(self, cfg, irreps_in, skip, opts)
            opts = {k: v for k, v in opts.items() if k not in ARCH_OPTION_KEYS}
            if self.grid and opts:
                old = self.product
                hidden = tuple(layer.out_features for layer in old.layers[:-1])
                self.product = GroupedGridMLP(
                    old.irreps_in, old.irreps_out, hidden=hidden, act=old.act, resolution=old.resolution,
                    output=opts.get("output", "grid"), linear=bool(opts.get("linear", False)),
                    num_groups=len(cfg.atomic_numbers) if opts.get("per_element") else 1,
                    input_scale=float(opts.get("input_scale", 1.0)), output_scale=float(opts.get("output_scale", 1.0)))
                self.product.cond_scale = float(opts.get("cond_scale", 1.0))
                if opts.get("act_coefficients") is not None:
                    self.product.act_coefficients = [float(a) for a in opts["act_coefficients"]]
            if _GRID_OPTIONS.get("linear_e3nn"):  # after the grid MLP is rebuilt
                _scale_parametrize(self)

        def forward(self, h, element, sh, r, edge_index, radial_embedding=None):
            if getattr(self, "element_mix", None) is not None:
                self.element_mix.element = element  # read by the wrapped linear_a during this call
            out = super().forward(h, element, sh, r, edge_index, radial_embedding)
            if getattr(self, "element_skip", None) is not None:
                out = out + self.element_skip(h, element)
            return out

    pot.Interaction = Interaction


# --------------------------------------------------------------------------- architecture prototypes (session 8)
def _element_linear_class():
    import torch
    from torch import nn

    class ElementLinear(nn.Module):
        """Per-element equivariant linear map (MACE's ``skip_tp``: features (x) element one-hot):
        for every output block, ``y_w = sum_{blocks b of ir} sum_u W[z, b, u, w] x^b_u / sqrt(n_ir)``,
        ``W ~ N(0, 1)``; mul x ir layout, ``(N, irreps_in.dim), element (N,) -> (N, irreps_out.dim)``."""

        def __init__(self, irreps_in, irreps_out, num_elements):
            super().__init__()
            self.irreps_in, self.irreps_out, self.n_el = irreps_in, irreps_out, num_elements
            self.pairs, ws = [], []
            for j, (mo, iro) in enumerate(irreps_out):
                ins = [i for i, (_, ir) in enumerate(irreps_in) if ir == iro]
                fan = sum(irreps_in[i].mul for i in ins)
                for i in ins:
                    self.pairs.append((i, j, fan))
                    ws.append(nn.Parameter(torch.randn(irreps_in[i].mul, num_elements * mo)))
            self.weights = nn.ParameterList(ws)
            self.element = None

        def forward(self, x, element=None):
            element = self.element if element is None else element
            n = x.shape[0]
            s_in = self.irreps_in.slices()
            parts = [[] for _ in self.irreps_out]
            rows = torch.arange(n, device=x.device)
            for (i, j, fan), w in zip(self.pairs, self.weights):
                (mi, ir), mo = self.irreps_in[i], self.irreps_out[j].mul
                xb = x[:, s_in[i]].reshape(n, mi, ir.dim).transpose(1, 2)  # (N, d, mi)
                y = (xb @ w.to(x.dtype)).reshape(n, ir.dim, self.n_el, mo)[rows, :, element]  # (N, d, mo)
                parts[j].append(y.transpose(1, 2) / math.sqrt(fan))
            blocks = [(sum(ps[1:], ps[0]) if ps else x.new_zeros(n, m.mul, m.ir.dim)).reshape(n, m.mul * m.ir.dim)
                      for m, ps in zip(self.irreps_out, parts)]
            return torch.cat(blocks, dim=-1)

    return ElementLinear


def _path_descriptor(irreps_in, sh, max_ell):
    """MACE's convolution: the channelwise Clebsch-Gordan product with one output block per path
    ``(l1, l2 -> l3)``, natural-parity outputs with ``l3 <= max_ell`` only (MACE's ``irreps_mid``)."""
    from equikit.o3 import Irreps
    from equikit.tp._descriptor import Mode, Path, TensorProductDescriptor

    blocks, raw = [], []
    for a, (m1, ir1) in enumerate(irreps_in):
        for b, (_, ir2) in enumerate(sh):
            for iro in ir1 * ir2:
                if iro.l <= max_ell and iro.p == (-1) ** iro.l:
                    raw.append((a, b, len(blocks)))
                    blocks.append((m1, iro))
    io, perm, _ = Irreps(blocks).sort()
    paths = tuple(Path(a, b, perm[c], Mode.UVU) for a, b, c in raw)
    return TensorProductDescriptor(irreps_in, sh, io, paths, "element", "component", coefficients="clebsch_gordan")


def _install_architecture_options(layer, cfg, irreps_in, skip, opts) -> None:
    """The session-8 prototypes of MACE's architecture on one ``Interaction`` (the sub-class of
    :func:`install_grid_options`): ``element_skip`` (layers with a skip, t > 0: the plain
    ``Linear`` skip replaced by a per-element one, MACE's residual ``skip_tp``; ``"all"``: also in
    layer 0, from the element embedding), ``element_mix`` (layer 0: the messages ``A`` after
    ``linear_a`` mixed per element, MACE's first-layer ``skip_tp(message, node_attrs)``; ``"all"``:
    in every layer), ``path_linear`` (Clebsch-Gordan edge product only: one output block per path
    ``(l1, l2 -> l3)``, so ``linear_a`` mixes channels per path, MACE's ``irreps_mid``)."""
    from torch import nn

    import equikit.models.potential as pot
    from equikit.nn import Linear, TensorProduct

    first = not skip
    es, em = opts.get("element_skip"), opts.get("element_mix")
    n_el = len(cfg.atomic_numbers)
    if es and (skip or es == "all"):
        layer.skip = None
        layer.element_skip = _element_linear_class()(irreps_in, layer.irreps_out, n_el)
    if opts.get("path_linear"):
        if layer.gaunt:
            raise ValueError("atoms_mace_accuracy: path_linear is implemented for the Clebsch-Gordan edge product only")
        desc = _path_descriptor(irreps_in, pot._natural(cfg.max_ell, 1), cfg.max_ell)
        layer.conv = TensorProduct(desc, backend=cfg.tp_backend, internal_weights=False)
        layer.radial = pot.RadialWeights(cfg, desc.weight_numel)
        layer.irreps_conv = desc.irreps_out
        layer.linear_a = Linear(desc.irreps_out, layer.irreps_a)
    if em and (first or em == "all"):
        layer.element_mix = _element_linear_class()(layer.irreps_a, layer.irreps_a, n_el)
        layer.linear_a = nn.Sequential(layer.linear_a, layer.element_mix)
    if opts.get("radial_e3nn"):
        if layer.radial.kind != "bessel":
            raise ValueError("atoms_mace_accuracy: radial_e3nn replaces the Bessel radial MLP; the variant has none")
        sizes = [cfg.num_radial, *cfg.radial_mlp, layer.radial.mlp[-1].out_features]
        layer.radial.mlp = _e3nn_mlp(sizes)


def _scale_parametrize(module) -> None:
    """Every ``torch.nn.Linear`` weight in ``module`` (the grid MLP, its conditioning map, a PyTorch
    radial MLP) re-parametrised as ``W = W_raw / sqrt(fan_in)`` with ``W_raw = W_init sqrt(fan_in)``:
    the same function and initial values, but Adam's steps act on ``W_raw``, so ``W`` moves
    ``sqrt(fan_in)`` times less per step (e3nn's parametrisation; session-8 prototype ``linear_e3nn``)."""
    from torch import nn
    from torch.nn.utils import parametrize

    class Scale(nn.Module):
        def __init__(self, s):
            super().__init__()
            self.s = s

        def forward(self, raw):
            return raw * self.s

        def right_inverse(self, w):
            return w / self.s

    for m in list(module.modules()):
        if isinstance(m, nn.Linear) and not parametrize.is_parametrized(m, "weight"):
            parametrize.register_parametrization(m, "weight", Scale(1.0 / math.sqrt(m.in_features)))


#: 1 / sqrt(E[silu(z)^2]), z ~ N(0, 1): e3nn's ``normalize2mom(silu)`` factor (quadrature)
_SILU_2MOM = 1.6765324703310909


def _e3nn_mlp(sizes):
    """The radial MLP in e3nn's parametrisation (MACE's ``FullyConnectedNet``): weights ``N(0, 1)``,
    the forward divides by ``sqrt(fan_in)``, SiLU scaled to unit second moment, no biases. The same
    function class as :func:`equikit.models.potential._radial_mlp` (PyTorch's ``nn.Linear``
    parametrisation, weights ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``); Adam's steps act on the raw
    weights, so the two train differently (session-8 prototype ``radial_e3nn``)."""
    import torch
    from torch import nn

    class ScaledLinear(nn.Module):
        def __init__(self, n_in, n_out):
            super().__init__()
            self.out_features = n_out
            self.raw = nn.Parameter(torch.randn(n_out, n_in))

        @property
        def weight(self):  # the effective (out, in) matrix (RadialWeights.head reads it)
            return self.raw / math.sqrt(self.raw.shape[1])

        def forward(self, x):
            return x @ self.weight.T.to(x.dtype)

    class NormSiLU(nn.Module):
        def forward(self, x):
            return torch.nn.functional.silu(x) * _SILU_2MOM

    layers = []
    for k in range(len(sizes) - 1):
        layers.append(ScaledLinear(sizes[k], sizes[k + 1]))
        if k < len(sizes) - 2:
            layers.append(NormSiLU())
    return nn.Sequential(*layers)


def train_one(argv: list[str]) -> int:
    """``train-one --grid-options JSON -- <equikit CLI arguments>``: install the grid options, then
    run ``equikit`` in this process."""
    i = argv.index("--")
    opts = json.loads(argv[argv.index("--grid-options") + 1])
    use_grid_options(opts)
    from equikit.cli.main import main as cli_main

    return cli_main(argv[i + 1:])


def split_variant(spec: dict | None) -> tuple[dict, dict, dict]:
    """A variant's settings -> ``(PotentialConfig fields, grid_options, train_settings)``.

    >>> split_variant({"product": "grid_mlp", "grid_options": {"output": "degree"}, "train_settings": {"lr": 0.005}})
    ({'product': 'grid_mlp'}, {'output': 'degree'}, {'lr': 0.005})
    """
    spec = dict(spec or {})
    grid, train = spec.pop("grid_options", None) or {}, spec.pop("train_settings", None) or {}
    bad = sorted(set(train) - {"lr", "ema_decay"})
    if bad:
        raise ValueError(f"atoms_mace_accuracy: unknown train_settings {bad}; known: ['ema_decay', 'lr']")
    return spec, dict(grid), dict(train)


# --------------------------------------------------------------------------- prepare
def _with_ref_keys(atoms_list, temperatures=None):
    """Frames with the labels both as calculator results (equikit's reader) and under
    mace-torch's default keys ``REF_energy`` / ``REF_forces`` / ``REF_stress`` (Voigt)."""
    import numpy as np

    out = []
    for k, a in enumerate(atoms_list):
        res = a.calc.results
        a.info["REF_energy"] = float(res["energy"])
        a.arrays["REF_forces"] = np.array(res["forces"], dtype=np.float64)
        if "stress" in res and all(a.pbc):
            s = np.asarray(res["stress"], dtype=np.float64)
            if s.shape == (3, 3):
                s = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
            a.info["REF_stress"] = s
        if temperatures is not None:
            a.info["temperature"] = float(temperatures[k])
        out.append(a)
    return out


def _write(path: Path, atoms_list) -> None:
    from ase.io import write

    tmp = path.with_suffix(".tmp.xyz")
    write(tmp, atoms_list, format="extxyz")
    os.replace(tmp, path)


def prepare_dataset(name: str, ds: dict, settings: dict, work: Path) -> None:
    """Generate the frames of data set ``name`` and write ``train_val.xyz`` (equikit's input;
    it splits off the validation frames itself), ``mace_train.xyz`` / ``mace_valid.xyz`` (the
    same split, computed with equikit's ``split_frames``), ``test.xyz`` and both run configs."""
    import shutil

    import torch

    from equikit.cli.train_potential import split_frames
    from equikit.data.atoms_md import EMTConfig, MMFFConfig, generate_emt, generate_mmff

    d = work / name
    d.mkdir(parents=True, exist_ok=True)
    n_tv = ds["n_train"] + ds["n_val"]
    src = ds.get("same_data_as")
    if src is not None and not (d / "test.xyz").exists():
        # the same frames as another data set (another training budget): copy its files
        if not (work / src / "test.xyz").exists():
            prepare_dataset(src, settings["datasets"][src], settings, work)
        for f in DATA_FILES:
            shutil.copyfile(work / src / f, d / f)
    if not (d / "test.xyz").exists():
        t0 = time.perf_counter()
        if ds["kind"] == "mmff":
            total = n_tv + ds["n_test"]
            frames = generate_mmff(MMFFConfig(ds["molecule"], temperatures=(ds["temperature"],),
                                              frames_per_temperature=total, stride=ds["stride"], seed=0))
            perm = torch.randperm(total, generator=torch.Generator().manual_seed(0)).tolist()
            test, train_val = frames[sorted(perm[:ds["n_test"]])], frames[sorted(perm[ds["n_test"]:])]
        else:
            train_val = generate_emt(EMTConfig("Cu", repeat=ds["repeat"], temperatures=(ds["train_temperature"],),
                                               frames_per_temperature=n_tv, stride=ds["stride"], seed=0))
            test = generate_emt(EMTConfig("Cu", repeat=ds["repeat"], temperatures=tuple(ds["test_temperatures"]),
                                          frames_per_temperature=ds["n_test_per_temperature"], stride=ds["stride"],
                                          seed=1))
        tv_atoms = _with_ref_keys(train_val.to_atoms(), train_val.info["temperature"].tolist())
        parts = split_frames(len(tv_atoms), ds["n_val"] / n_tv, 0.0, seed=0)
        assert len(parts["train"]) == ds["n_train"], parts  # the split equikit will make
        _write(d / "train_val.xyz", tv_atoms)
        _write(d / "mace_train.xyz", [tv_atoms[i] for i in parts["train"]])
        _write(d / "mace_valid.xyz", [tv_atoms[i] for i in parts["val"]])
        _write(d / "test.xyz", _with_ref_keys(test.to_atoms(), test.info["temperature"].tolist()))
        print(f"{name}: {len(train_val)} train+val, {len(test)} test frames ({time.perf_counter() - t0:.0f} s)",
              flush=True)
    _write_configs(name, ds, settings, d)


def _write_configs(name: str, ds: dict, settings: dict, d: Path) -> None:
    import yaml

    m, t = settings["model"], settings["train"]
    seed = ds.get("seed", t["seed"])  # a data set may train with another seed (run-to-run spread)
    for variant in variants_of(ds, settings):
        fields, grid, tr = split_variant(settings["variants"][variant])
        model = {**m, **fields}
        ours = {"seed": seed, "epochs": ds["epochs"], "lr": tr.get("lr", t["lr"]), "batch_size": ds["batch_size"],
                "eval_every": 1, "progress": False, "grad_clip": t["grad_clip"],
                "extra": {"data": str(d / "train_val.xyz"), "model": model,
                          "val_fraction": ds["n_val"] / (ds["n_train"] + ds["n_val"]), "test_fraction": 0.0,
                          "split_seed": 0, "energy_weight": ds["energy_weight"], "forces_weight": ds["forces_weight"],
                          "stress_weight": ds["stress_weight"], "optimizer": "adam", "schedule": "plateau",
                          "plateau_factor": t["plateau_factor"], "plateau_patience": t["plateau_patience"],
                          "ema_decay": tr.get("ema_decay", t["ema_decay"]), "eval_batch_size": t["eval_batch_size"]}}
        (d / f"{variant}.yaml").write_text(yaml.safe_dump(ours, sort_keys=False))
        side = d / f"{variant}.grid.json"
        if grid:
            side.write_text(json.dumps(grid))
        elif side.exists():
            side.unlink()
    stress = ds["stress_weight"] > 0
    mace = ["--name", "mace", "--work_dir", str(d / "mace"), "--seed", str(seed), "--device", "cpu",
            "--default_dtype", m["dtype"], "--train_file", str(d / "mace_train.xyz"),
            "--valid_file", str(d / "mace_valid.xyz"), "--E0s", "average", "--model", "MACE",
            "--hidden_irreps", m["hidden_irreps"], "--max_ell", str(m["max_ell"]),
            "--correlation", str(m["correlation"]), "--num_interactions", str(m["num_interactions"]),
            "--r_max", str(m["cutoff"]), "--radial_type", "bessel", "--num_radial_basis", str(m["num_radial"]),
            "--num_cutoff_basis", str(m["envelope_p"]), "--radial_MLP", str(list(m["radial_mlp"])),
            "--MLP_irreps", f"{m['readout_hidden']}x0e", "--loss", "stress" if stress else "weighted",
            "--energy_weight", str(ds["energy_weight"]), "--forces_weight", str(ds["forces_weight"]),
            "--stress_weight", str(ds["stress_weight"]), "--compute_stress", str(stress),
            "--batch_size", str(ds["batch_size"]), "--valid_batch_size", str(t["eval_batch_size"]),
            "--max_num_epochs", str(ds["epochs"]), "--lr", str(t["lr"]), "--weight_decay", "0.0",
            "--ema", "--ema_decay", str(t["ema_decay"]), "--scheduler", "ReduceLROnPlateau",
            "--lr_factor", str(t["plateau_factor"]), "--scheduler_patience", str(t["plateau_patience"]),
            "--eval_interval", "1", "--plot", "False", "--save_cpu", "--error_table", "PerAtomRMSE",
            # no final re-evaluation of the training and validation sets (reporting only; this
            # benchmark evaluates every model itself on the test frames)
            "--skip_evaluate_heads", "Default"]
    (d / "mace_args.json").write_text(json.dumps(mace, indent=1))


# --------------------------------------------------------------------------- train
def _run_logged(cmd: list[str], log: Path, pid_file: Path | None, env: dict) -> float:
    """Run ``cmd`` (it inherits this process's niceness), stdout+stderr to ``log``; its PID in
    ``pid_file`` while it runs."""
    t0 = time.perf_counter()
    with open(log, "a") as fh:
        fh.write(f"\n# {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        if pid_file is not None:
            pid_file.write_text(f"{proc.pid}\n")
        rc = proc.wait()
    if rc != 0:
        raise RuntimeError(f"{cmd[0]} failed (exit {rc}); see {log}")
    return time.perf_counter() - t0


def mace_model_path(d: Path) -> Path:
    return d / "mace" / "mace.model"


def variants_of(ds: dict, settings: dict) -> list[str]:
    """equikit variants trained on data set ``ds``: its ``variants`` list, else all of the config's."""
    names = ds.get("variants") or list(settings["variants"])
    unknown = sorted(set(names) - set(settings["variants"]))
    if unknown:
        raise ValueError(f"atoms_mace_accuracy: unknown variants {unknown}; "
                         f"the config has {sorted(settings['variants'])}")
    return names


def train_dataset(name: str, d: Path, pid_file: Path | None, variants: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    walls = json.loads((d / "wall.json").read_text()) if (d / "wall.json").exists() else {}
    for variant in variants:
        ours_dir = d / variant
        if (ours_dir / "model.pt").exists():
            continue
        cmd = ["train", "potential", "--config", str(d / f"{variant}.yaml"), "--out", str(ours_dir),
               "--threads", "1", "--no-progress"]
        side = d / f"{variant}.grid.json"
        if side.exists():  # session-7 grid options: train through this script, which installs them
            cmd = [str(VENV / "python"), str(Path(__file__).resolve()), "train-one", "--grid-options",
                   side.read_text(), "--", *cmd]
        else:
            cmd = [str(VENV / "equikit"), *cmd]
        if (ours_dir / "checkpoint.pt").exists():
            cmd.append("--resume")
        walls[f"{variant}_s"] = walls.get(f"{variant}_s", 0.0) + _run_logged(cmd, d / f"{variant}.log", pid_file, env)
        (d / "wall.json").write_text(json.dumps(walls))
    if not mace_model_path(d).exists():
        args = json.loads((d / "mace_args.json").read_text())
        if (d / "mace" / "checkpoints").exists():
            args.append("--restart_latest")
        walls["mace_s"] = walls.get("mace_s", 0.0) + _run_logged([str(VENV_MACE / "mace_run_train"), *args],
                                                                 d / "mace.log", pid_file, env)
        (d / "wall.json").write_text(json.dumps(walls))
    print(f"{name}: trained, wall {walls}", flush=True)


# --------------------------------------------------------------------------- evaluate (.venv-mace)
def _predict(calc, frames, stress: bool):
    """Energies, forces (and 3 x 3 stresses) of ``frames`` through an ASE calculator."""
    import numpy as np

    e, f, s = [], [], []
    for a in frames:
        a = a.copy()
        a.calc = calc
        e.append(a.get_potential_energy())
        f.append(a.get_forces())
        if stress:
            s.append(a.get_stress(voigt=False))
    return np.array(e), np.concatenate(f), (np.array(s) if stress else None)


def _predict_ours_batched(model_path: Path, test_path: Path, dtype: str, stress: bool, batch_size: int = 10):
    """equikit's predictions on the whole test file, ``batch_size`` structures per call."""
    import torch
    from ase.io import read

    from equikit.cli.train_potential import predict
    from equikit.data.atoms import AtomsBatch
    from equikit.models.calculator import load_potential

    images = read(test_path, index=":", format="extxyz")
    for a in images:  # positions only: the labels stay out of the model's input
        a.calc = None
    frames = AtomsBatch.from_atoms(images, dtype=torch.float32 if dtype == "float32" else torch.float64)
    p = predict(load_potential(model_path), frames, batch_size)
    return (p["energy"].numpy(), p["forces"].numpy(), p["stress"].numpy() if stress else None)


def _predict_mace_batched(model_path: Path, test_path: Path, dtype: str, stress: bool, out: Path,
                          batch_size: int = 10):
    """mace-torch's predictions on the whole test file through its own ``mace_eval_configs``."""
    import numpy as np
    from ase.io import read

    cmd = [str(VENV_MACE / "mace_eval_configs"), "--configs", str(test_path), "--model", str(model_path),
           "--output", str(out), "--device", "cpu", "--default_dtype", dtype, "--batch_size", str(batch_size)]
    if stress:
        cmd.append("--compute_stress")
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1",
                                                              "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"})
    frames = read(out, index=":", format="extxyz")
    e = np.array([a.info["MACE_energy"] for a in frames])
    f = np.concatenate([a.arrays["MACE_forces"] for a in frames])
    s = np.array([np.asarray(a.info["MACE_stress"]).reshape(3, 3) for a in frames]) if stress else None
    return e, f, s


def _reference(frames, stress: bool):
    import numpy as np

    e = np.array([a.info["REF_energy"] for a in frames])
    f = np.concatenate([a.arrays["REF_forces"] for a in frames])
    s = None
    if stress:
        s = []
        for a in frames:
            xx, yy, zz, yz, xz, xy = a.info["REF_stress"]
            s.append([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
        s = np.array(s)
    return e, f, s


def _errors(pred, ref, natoms, sel=None) -> dict:
    import numpy as np

    (pe, pf, ps), (re, rf, rs) = pred, ref
    if sel is None:
        sel = np.ones(len(pe), dtype=bool)
    atom_sel = np.repeat(sel, natoms)
    de, dea = (pe - re)[sel], ((pe - re) / natoms)[sel]
    df = (pf - rf)[atom_sel]
    out = {"frames": int(sel.sum()), "energy_mae_mev": 1e3 * float(np.abs(de).mean()),
           "energy_mae_mev_per_atom": 1e3 * float(np.abs(dea).mean()),
           "energy_rmse_mev_per_atom": 1e3 * float(np.sqrt((dea**2).mean())),
           "forces_mae_mev_per_a": 1e3 * float(np.abs(df).mean()),
           "forces_rmse_mev_per_a": 1e3 * float(np.sqrt((df**2).mean()))}
    if ps is not None:
        ds = (ps - rs)[sel]
        out["stress_rmse_mev_per_a3"] = 1e3 * float(np.sqrt((ds**2).mean()))
    return out


def _nve(calc, start, nve: dict) -> dict:
    """NVE velocity Verlet from ``start`` (positions and cell) with Maxwell-Boltzmann velocities
    at ``nve["temperature"]`` (seeded); drift = slope of total energy per atom vs time."""
    import numpy as np
    from ase import units
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
    from ase.md.verlet import VelocityVerlet

    from equikit.cli.md import energy_drift

    atoms = start.copy()
    atoms.calc = calc
    MaxwellBoltzmannDistribution(atoms, temperature_K=nve["temperature"], rng=np.random.default_rng(nve["seed"]))
    Stationary(atoms)
    dyn = VelocityVerlet(atoms, nve["timestep_fs"] * units.fs)
    n = len(atoms)
    rec = {"t_ps": [], "etot": [], "temp": []}

    def log():
        rec["t_ps"].append(dyn.nsteps * nve["timestep_fs"] / 1000)
        rec["etot"].append((atoms.get_potential_energy() + atoms.get_kinetic_energy()) / n)
        rec["temp"].append(atoms.get_temperature())

    dyn.attach(log, interval=nve["log_every"])
    t0 = time.perf_counter()
    dyn.run(nve["steps"])
    sec = time.perf_counter() - t0
    et = np.array(rec["etot"])
    return {"steps": nve["steps"], "timestep_fs": nve["timestep_fs"], "seconds": sec,
            "steps_per_second": nve["steps"] / sec,
            "energy_drift_mev_per_atom_per_ps": 1e3 * energy_drift(rec["t_ps"], et),
            "etot_max_deviation_mev_per_atom": 1e3 * float(np.abs(et - et[0]).max()),
            "temperature_mean_K": float(np.mean(rec["temp"][1:])), "t_ps": rec["t_ps"],
            "etot_per_atom": et.tolist()}


def mace_loop_seconds(d: Path) -> float | None:
    """Seconds between mace-torch's "Started training" and "Training complete" log lines
    (the training loop with its per-epoch validation; equikit's ``summary.json`` ``seconds``
    measures the same span)."""
    from datetime import datetime

    logs = sorted((d / "mace" / "logs").glob("*.log"))
    logs = [p for p in logs if "debug" not in p.name]
    if not logs:
        return None
    start = end = None
    for line in logs[0].read_text().splitlines():
        if "Started training" in line or "Training complete" in line:
            t = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f")
            if "Started" in line and start is None:
                start = t
            elif "complete" in line:
                end = t
    return (end - start).total_seconds() if start and end else None


def _counts(frames, elements: list[int]):
    """``(B, len(elements))`` element counts of ``frames``."""
    import numpy as np

    col = {z: k for k, z in enumerate(elements)}
    out = np.zeros((len(frames), len(elements)))
    for s, a in enumerate(frames):
        for z in a.numbers:
            out[s, col[int(z)]] += 1
    return out


def refit_offsets(pred_e, ref_e, counts):
    """Per-element energy shifts ``c`` (eV) that best remove a model's energy offset:
    ``min_c sum_s (pred_s - ref_s - counts_s . c)^2`` (minimum norm; for one molecule, whose
    frames all have one composition, this is the mean residual spread over the atoms).
    Computed on the validation frames, applied to the test frames (no test labels used).

    >>> import numpy as np
    >>> c = refit_offsets(np.array([1.5, 2.5]), np.array([1.0, 2.0]), np.array([[1.0, 0.0], [1.0, 0.0]]))
    >>> [round(float(v), 6) for v in c]
    [0.5, 0.0]
    """
    import numpy as np

    return np.linalg.pinv(counts) @ (np.asarray(pred_e) - np.asarray(ref_e))


#: metrics the "within 10% of mace-torch" verdict is given for (force MAE is the primary one)
VERDICT_METRICS = ("forces_mae_mev_per_a", "energy_mae_mev", "energy_mae_mev_refit")


def verdicts(models: dict, tolerance: float = 0.10) -> dict:
    """Per equikit model and metric: ``ratio`` = its error / mace-torch's and ``within``
    (``ratio <= 1 + tolerance``: at most 10% worse; being better passes too).

    >>> f = "forces_mae_mev_per_a"
    >>> v = verdicts({"mace_torch": {"all": {f: 10.0}}, "cg": {"all": {f: 10.5}}})
    >>> v["cg"]["forces_mae_mev_per_a"]
    {'ratio': 1.05, 'within': True}
    """
    ref = models[MACE]["all"]
    out = {}
    for name, m in models.items():
        if name == MACE:
            continue
        out[name] = {}
        for key in VERDICT_METRICS:
            if key in m["all"] and key in ref and ref[key] > 0:
                ratio = m["all"][key] / ref[key]
                out[name][key] = {"ratio": round(ratio, 4), "within": bool(ratio <= 1.0 + tolerance)}
    return out


def _prediction_key(model_file: Path, d: Path, cname: str, settings: dict) -> str:
    """Identity of one model's predictions: the resolved model file and its time, the contents of
    the test and validation files, the variant's settings (a model linked from another work
    directory, e.g. a seed-0 run reused, is predicted once)."""
    import hashlib

    h = hashlib.sha256()
    for f in (d / "test.xyz", d / "mace_valid.xyz"):
        h.update(f.read_bytes())
    m = model_file.resolve()
    return json.dumps([str(m), m.stat().st_mtime, h.hexdigest(), settings["model"],
                       settings["variants"].get(cname)], sort_keys=True)


def _prediction_file(work: Path, key: str) -> Path:
    import hashlib

    return work / "_prediction_cache" / (hashlib.sha256(key.encode()).hexdigest()[:24] + ".pkl")


def _load_prediction(work: Path, model_file: Path, d: Path, cname: str, settings: dict):
    """Cached ``(predictions, validation energies, seconds)`` of one model, or None."""
    key = _prediction_key(model_file, d, cname, settings)
    f = _prediction_file(work, key)
    if not f.exists():
        return None
    with open(f, "rb") as fh:
        data = pickle.load(fh)
    return data["value"] if data["key"] == key else None


def _save_prediction(work: Path, model_file: Path, d: Path, cname: str, settings: dict, value) -> None:
    key = _prediction_key(model_file, d, cname, settings)
    f = _prediction_file(work, key)
    f.parent.mkdir(parents=True, exist_ok=True)
    with open(f.with_suffix(".tmp"), "wb") as fh:
        pickle.dump({"key": key, "value": value}, fh)
    os.replace(f.with_suffix(".tmp"), f)


def evaluate(settings: dict, work: Path, out_dir: Path, threads: int, result_name: str = NAME) -> dict:
    import numpy as np
    import torch
    from ase.calculators.emt import EMT
    from ase.io import read

    torch.set_num_threads(threads)
    import mace
    from mace.calculators import MACECalculator

    from _common import environment
    from equikit.models.calculator import EquikitCalculator

    payload = {"env": environment(), "mace_torch": getattr(mace, "__version__", "0.3.16"), "settings": settings,
               "datasets": {}}
    dtype = settings["model"]["dtype"]
    for name, ds in settings["datasets"].items():
        d = work / name
        ours = [v for v in variants_of(ds, settings) if (d / v / "model.pt").exists()]
        missing = [v for v in variants_of(ds, settings) if v not in ours]
        if not (ours and mace_model_path(d).exists()):
            print(f"{name}: not trained, skipped", flush=True)
            continue
        stress = ds["kind"] == "emt"
        # a data set whose models and settings are unchanged since its last evaluation is reused
        cache_key = json.dumps([ds, settings["model"], {v: settings["variants"][v] for v in ours},
                                [(str(p), p.stat().st_mtime) for p in [*(d / v / "model.pt" for v in ours),
                                                                      mace_model_path(d)]]], sort_keys=True)
        cache = d / "evaluation_cache.pkl"
        if cache.exists():
            with open(cache, "rb") as fh:
                cached = pickle.load(fh)
            if cached["key"] == cache_key:
                print(f"{name}: unchanged since its last evaluation, reused", flush=True)
                payload["datasets"][name] = cached["res"]
                payload.setdefault("_preds", {})[name] = cached["preds"]
                continue
        frames = read(d / "test.xyz", index=":", format="extxyz")
        valid = read(d / "mace_valid.xyz", index=":", format="extxyz")
        natoms = np.array([len(a) for a in frames])
        elements = sorted({int(z) for a in [*frames, *valid] for z in a.numbers})
        counts_test, counts_val = _counts(frames, elements), _counts(valid, elements)
        ref, ref_val_e = _reference(frames, stress), np.array([a.info["REF_energy"] for a in valid])
        calcs = {}
        for v in ours:
            use_grid_options(split_variant(settings["variants"][v])[1])
            calcs[v] = EquikitCalculator(str(d / v / "model.pt"))
        calcs[MACE] = MACECalculator(model_paths=str(mace_model_path(d)), device="cpu", default_dtype=dtype)
        walls = json.loads((d / "wall.json").read_text()) if (d / "wall.json").exists() else {}
        summaries = {v: json.loads((d / v / "summary.json").read_text()) for v in ours}
        res = {"n_test": len(frames), "n_val": len(valid), "walls_s": walls, "epochs": ds["epochs"],
               "batch_size": ds["batch_size"], "n_train": ds["n_train"],
               "seed": ds.get("seed", settings["train"]["seed"]),
               "gradient_steps": ds["epochs"] * (ds["n_train"] // ds["batch_size"]),
               "not_trained": missing, "models": {}}
        preds = {}
        for cname, calc in calcs.items():
            t0 = time.perf_counter()
            model_file = mace_model_path(d) if cname == MACE else d / cname / "model.pt"
            cached = _load_prediction(work, model_file, d, cname, settings)
            if cached is not None:
                preds[cname], val_e, sec = cached
            elif cname == MACE:  # one mace_eval_configs call (its start-up is slow) for validation + test frames
                _write(d / "mace_eval_input.xyz", [*valid, *frames])
                pe, pf, ps = _predict_mace_batched(mace_model_path(d), d / "mace_eval_input.xyz", dtype, stress,
                                                   d / "mace_eval_predictions.xyz")
                nv = len(valid)
                val_e = pe[:nv]
                preds[cname] = (pe[nv:], pf[int(counts_val.sum()):], None if ps is None else ps[nv:])
            else:
                use_grid_options(split_variant(settings["variants"][cname])[1])
                preds[cname] = _predict_ours_batched(d / cname / "model.pt", d / "test.xyz", dtype, stress)
                val_e = _predict_ours_batched(d / cname / "model.pt", d / "mace_valid.xyz", dtype, False)[0]
            if cached is None:
                sec = time.perf_counter() - t0
                _save_prediction(work, model_file, d, cname, settings, (preds[cname], val_e, sec))
            # the ASE calculator gives the same numbers (checked on the first frames)
            k = 5
            via_calc = _predict(calc, frames[:k], stress)
            nat_k = int(natoms[:k].sum())
            gap = max(float(np.abs(via_calc[0] - preds[cname][0][:k]).max() / natoms[:k].max()),
                      float(np.abs(via_calc[1] - preds[cname][1][:nat_k]).max()),
                      float(np.abs(via_calc[2] - preds[cname][2][:k]).max()) if stress else 0.0)
            shift = refit_offsets(val_e, ref_val_e, counts_val)
            pe, pf, ps = preds[cname]
            refit = _errors((pe - counts_test @ shift, pf, ps), ref, natoms)
            r = {"all": _errors(preds[cname], ref, natoms), "eval_seconds": sec,
                 "calculator_vs_batched_max_abs_diff": gap,
                 "val_offset_mev_per_atom": 1e3 * float(np.mean((val_e - ref_val_e) / counts_val.sum(1))),
                 "refit_shift_ev": dict(zip(map(str, elements), shift.tolist()))}
            r["all"]["energy_mae_mev_refit"] = refit["energy_mae_mev"]
            r["all"]["energy_mae_mev_per_atom_refit"] = refit["energy_mae_mev_per_atom"]
            if cname == MACE:
                r["parameters"] = sum(p.numel() for p in calc.models[0].parameters())
                r["train_loop_s"] = mace_loop_seconds(d)
                r["wall_s"] = walls.get("mace_s")
            else:
                r["parameters"] = summaries[cname]["parameters"]
                r["train_loop_s"] = summaries[cname]["seconds"]
                r["steps"] = summaries[cname]["steps"]
                r["wall_s"] = walls.get(f"{cname}_s")
            if stress:
                temps = np.array([a.info["temperature"] for a in frames])
                r["by_temperature"] = {f"{t:g}": _errors(preds[cname], ref, natoms, temps == t)
                                       for t in sorted(set(temps.tolist()))}
            res["models"][cname] = r
            print(f"{name} {cname}: {r['all']} ({sec:.0f} s)", flush=True)
        res["verdicts"] = verdicts(res["models"])
        if stress and "nve" in ds:
            start = frames[0]
            res["nve"] = {}
            for cname, calc in (("emt_reference", EMT()), *calcs.items()):
                res["nve"][cname] = _nve(calc, start, ds["nve"])
                print(f"{name} NVE {cname}: drift {res['nve'][cname]['energy_drift_mev_per_atom_per_ps']:.3g} "
                      f"meV/atom/ps", flush=True)
        payload["datasets"][name] = res
        payload.setdefault("_preds", {})[name] = (ref, preds, natoms, stress,
                                                  np.array([a.info.get("temperature", 0.0) for a in frames]))
        with open(cache.with_suffix(".tmp"), "wb") as fh:
            pickle.dump({"key": cache_key, "res": res, "preds": payload["_preds"][name]}, fh)
        os.replace(cache.with_suffix(".tmp"), cache)
    payload["env_end"] = environment()
    plot(payload, out_dir / f"{result_name}.png")
    payload.pop("_preds", None)
    md = report(payload)
    from _common import write_results

    write_results(result_name, payload, md, out_dir)
    print(md, flush=True)
    return payload


COLORS = {"cg": "tab:blue", "facet_sparse": "tab:green", MACE: "tab:orange"}


def plot(payload: dict, path: Path) -> None:
    """Per data set: energy parity (per atom), force parity, force MAE per model (bar) or, for
    the temperature-transfer set, RMSE against the test temperature."""
    from _common import pyplot

    plt = pyplot()
    preds = payload.get("_preds", {})
    names = list(preds)
    if not names:
        return
    fig, axes = plt.subplots(len(names), 3, figsize=(12.6, 3.6 * len(names)), squeeze=False)
    for row, name in enumerate(names):
        (re, rf, _), pr, natoms, stress, _ = preds[name]
        models = payload["datasets"][name]["models"]
        for cname, (pe, pf, _) in pr.items():
            c = COLORS.get(cname)
            axes[row, 0].scatter(re / natoms, pe / natoms, s=3, alpha=0.4, color=c, label=cname)
            axes[row, 1].scatter(rf.ravel(), pf.ravel(), s=1, alpha=0.2, color=c, label=cname)
        for ax, what in zip(axes[row, :2], ("energy (eV/atom)", "force components (eV/A)")):
            lo, hi = ax.get_xlim()
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.7)
            ax.set(xlabel=f"reference {what}", ylabel=f"predicted {what}", title=f"{name}: test parity")
            ax.legend(markerscale=4, fontsize=7)
        ax = axes[row, 2]
        if stress:
            for cname, m in models.items():
                rows = m["by_temperature"]
                ts = [float(t) for t in rows]
                for key, ls in (("forces_rmse_mev_per_a", "-"), ("energy_rmse_mev_per_atom", "--"),
                                ("stress_rmse_mev_per_a3", ":")):
                    ax.plot(ts, [rows[t][key] for t in rows], ls, marker="o", color=COLORS.get(cname),
                            label=f"{cname} {key.split('_')[0]}")
            ax.set(xlabel="test temperature (K) [trained at 300 K]", ylabel="RMSE (meV/A, meV/atom, meV/A^3)",
                   yscale="log", title=f"{name}: transfer")
            ax.legend(fontsize=6)
        else:
            cn = list(models)
            ax.bar(cn, [models[c]["all"]["forces_mae_mev_per_a"] for c in cn],
                   color=[COLORS.get(c, "gray") for c in cn])
            ref = models[MACE]["all"]["forces_mae_mev_per_a"]
            ax.axhline(1.1 * ref, color="k", ls="--", lw=0.8, label="1.1 x mace-torch")
            steps = payload["datasets"][name]["gradient_steps"]
            ax.set(ylabel="test force MAE (meV/A)", title=f"{name}: {steps} steps")
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _fmt(v, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def seed_summary(payload: dict) -> list[str]:
    """Markdown lines: per group of data sets that differ only in the training seed (same molecule, frames and
    epochs) and per model, the test force MAE as mean +- sample std over the seeds, and the ratio of the
    means to mace-torch's (empty when no group has two seeds).

    >>> def ds(seed, f_ours, f_mace):
    ...     return {"seed": seed, "gradient_steps": 500, "models": {"cg": {"all": {"forces_mae_mev_per_a": f_ours}},
    ...             "mace_torch": {"all": {"forces_mae_mev_per_a": f_mace}}}}
    >>> p = {"settings": {"datasets": {n: {"molecule": "ethanol", "epochs": 5} for n in ("a", "b")}},
    ...      "datasets": {"a": ds(0, 30.0, 20.0), "b": ds(1, 34.0, 20.0)}}
    >>> seed_summary(p)[-1]
    '| ethanol, 500 steps | cg | 2 (0, 1) | 32.0 +- 2.8 | 30.0 - 34.0 | 1.60 no |'
    """
    import statistics

    groups: dict = {}
    for name, r in payload["datasets"].items():
        if "nve" in r:
            continue
        ds = payload["settings"]["datasets"].get(name, {})
        key = (ds.get("molecule", name), r["gradient_steps"])
        for cname, m in r["models"].items():
            f = m["all"]["forces_mae_mev_per_a"]
            groups.setdefault(key, {}).setdefault(cname, []).append((r.get("seed", 0), f))
    rows = []
    for (mol, steps), models in groups.items():
        if max(len(v) for v in models.values()) < 2 or MACE not in models:
            continue
        ref = statistics.mean(f for _, f in models[MACE])
        for cname, vals in sorted(models.items(), key=lambda kv: kv[0] != MACE):
            fs = [f for _, f in vals]
            sd = statistics.stdev(fs) if len(fs) > 1 else float("nan")
            ratio = statistics.mean(fs) / ref
            verdict = "1" if cname == MACE else f"{ratio:.2f} {'ok' if ratio <= 1.10 else 'no'}"
            rows.append(f"| {mol}, {steps} steps | {cname} | {len(fs)} ({', '.join(str(s) for s, _ in vals)}) | "
                        f"{statistics.mean(fs):.1f} +- {sd:.1f} | {min(fs):.1f} - {max(fs):.1f} | {verdict} |")
    if not rows:
        return []
    return ["", "### Over training seeds: test force MAE (meV/A), mean +- sample std, and the ratio of the means", "",
            "| data | model | seeds | mean +- std | min - max | mean / mace-torch's mean |",
            "|---|---|---|---|---|---|", *rows]


def report(payload: dict) -> str:
    env, env_end = payload["env"], payload["env_end"]
    s = payload["settings"]
    variants = "; ".join(f"`{k}`: {v or 'MACE architecture (the `model` settings)'}" for k, v in s["variants"].items())
    lines = ["# equikit vs mace-torch: accuracy at an equal training budget (issue 7, benchmarks 1 and 2)", "",
             f"`benchmarks/atoms_mace_accuracy.py` (prepare, train, evaluate); mace-torch {payload['mace_torch']}, "
             f"torch {env['torch']}; evaluation load average {tuple(round(v, 2) for v in env['loadavg'])} -> "
             f"{tuple(round(v, 2) for v in env_end['loadavg'])}. "
             f"All models: `{s['model']['hidden_irreps']}`, "
             "max_ell 3, correlation 3, 2 interactions, cutoff 5 A, float32, lr 0.01, EMA 0.99, gradient clip 10, "
             "one thread, per-atom energy MSE x 1 + force MSE x 100, E0 by least squares on the training "
             "energies; equal epochs and batches = equal gradient steps. mace-torch and `cg`: 8 Bessel + p=6 "
             f"envelope, radial MLP [64, 64, 64]. equikit variants: {variants}. "
             "Training wall times were measured on a shared 2-core machine while others worked (provisional).", "",
             "Energy MAE `refit`: each model's per-element energy shift fitted by least squares on its own "
             "predictions of the 50 validation frames (no test labels), then subtracted on the test frames: "
             "it removes a constant energy offset, which forces do not determine (see docs/potentials.md). "
             "`x mace` = error / mace-torch's error; `ok` = within 10% of mace-torch (or better).", "",
             "## MD17-lite (MMFF94 500 K Langevin MD; test MAE)", "",
             "| data set | train / test frames | epochs (steps) | model | params | energy MAE meV | "
             "energy MAE meV (refit) | val offset meV/atom | force MAE meV/A | force x mace | training loop s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    summary = []
    for name, r in payload["datasets"].items():
        if "nve" in r:
            continue
        for cname, m in r["models"].items():
            a = m["all"]
            v = r["verdicts"].get(cname, {}).get("forces_mae_mev_per_a")
            x = "1" if cname == MACE else f"{v['ratio']:.2f} ({'ok' if v['within'] else 'no'})"
            lines.append(f"| {name} | {r['n_train']} / {r['n_test']} | {r['epochs']} ({r['gradient_steps']}) | "
                         f"{cname} | {m['parameters']} | {a['energy_mae_mev']:.1f} | {a['energy_mae_mev_refit']:.1f} | "
                         f"{m['val_offset_mev_per_atom']:.1f} | {a['forces_mae_mev_per_a']:.1f} | {x} | "
                         f"{_fmt(m['train_loop_s'], '.0f')} |")
        if r.get("not_trained"):
            lines.append(f"| {name} | | | {', '.join(r['not_trained'])}: not trained (budget) | | | | | | | |")
    for name, r in payload["datasets"].items():
        for cname, vs in r["verdicts"].items():
            summary.append(f"| {name} ({r['gradient_steps']} steps) | {cname} | " + " | ".join(
                f"{vs[k]['ratio']:.2f} {'ok' if vs[k]['within'] else 'no'}" if k in vs else "n/a"
                for k in VERDICT_METRICS) + " |")
    # geometric means of the ratios over the molecules trained for the same number of steps
    groups: dict = {}
    for r in payload["datasets"].values():
        if "nve" in r:
            continue
        for cname, vs in r["verdicts"].items():
            groups.setdefault((r["gradient_steps"], r.get("seed", 0), cname), []).append(vs)
    one_seed = len({k[1] for k in groups}) == 1
    for (steps, seed, cname), rows in groups.items():
        if len(rows) < 2:
            continue
        cells = []
        for k in VERDICT_METRICS:
            ratios = [v[k]["ratio"] for v in rows if k in v]
            g = math.exp(sum(math.log(x) for x in ratios) / len(ratios))
            cells.append(f"{g:.2f} {'ok' if g <= 1.10 else 'no'} ({sum(v[k]['within'] for v in rows if k in v)}"
                         f"/{len(ratios)} ok)")
        label = f"{steps} steps" if one_seed else f"{steps} steps, seed {seed}"
        summary.append(f"| geometric mean, {len(rows)} data sets ({label}) | {cname} | "
                       + " | ".join(cells) + " |")
    if summary:
        lines += ["", "### Verdicts: within 10% of mace-torch (error ratio equikit / mace-torch; <= 1.10 = ok)", "",
                  "| data set | variant | force MAE (primary) | energy MAE | energy MAE (refit) |",
                  "|---|---|---|---|---|", *summary]
    lines += seed_summary(payload)
    for name, r in payload["datasets"].items():
        if "nve" not in r:
            continue
        loops = ", ".join(f"{c} {_fmt(m['train_loop_s'], '.0f')} s ({m['parameters']} parameters)"
                          for c, m in r["models"].items())
        lines += ["", f"## EMT Cu temperature transfer ({name}: trained on 300 K; test RMSE)", "",
                  f"{r['n_train']} training frames, {r['epochs']} epochs ({r['gradient_steps']} steps); training "
                  f"loop: {loops}. Energy MAE over all test frames, raw / after the E0 refit: "
                  + ", ".join(f"{c} {m['all']['energy_mae_mev_per_atom']:.2f} / "
                              f"{m['all']['energy_mae_mev_per_atom_refit']:.2f} meV/atom"
                              for c, m in r["models"].items())
                  + (f"; not trained (budget): {', '.join(r['not_trained'])}." if r.get("not_trained") else "."),
                  "",
                  "| test T (K) | model | energy RMSE meV/atom | force RMSE meV/A | stress RMSE meV/A^3 |",
                  "|---|---|---|---|---|"]
        for cname, m in r["models"].items():
            for t, e in m["by_temperature"].items():
                lines.append(f"| {t} | {cname} | {e['energy_rmse_mev_per_atom']:.3f} | "
                             f"{e['forces_rmse_mev_per_a']:.1f} | {e['stress_rmse_mev_per_a3']:.2f} |")
        nv = next(iter(r["nve"].values()))
        lines += ["", f"NVE: velocity Verlet, {nv['steps']} steps of {nv['timestep_fs']} fs from the first 300 K "
                  "test frame, Maxwell-Boltzmann velocities at 300 K (seed 0), same start for every model.", "",
                  "| model | drift meV/atom/ps | max deviation of E_tot meV/atom | mean T (K) | MD steps/s |",
                  "|---|---|---|---|---|"]
        for cname, v in r["nve"].items():
            lines.append(f"| {cname} | {v['energy_drift_mev_per_atom_per_ps']:.4f} | "
                         f"{v['etot_max_deviation_mev_per_atom']:.3f} | {v['temperature_mean_K']:.0f} | "
                         f"{v['steps_per_second']:.1f} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- cost of the grid options
def _cost_case(frames, z: tuple, settings: dict, variants: list[str], repeats: int) -> dict:
    """Thread-time medians of the product layers and of the training step of each variant on ``frames``."""
    import numpy as np
    import torch

    import equikit.models.potential as pot
    from _common import interleaved
    from equikit.data.atoms import AtomsBatch

    batch = AtomsBatch.from_atoms([a.copy() for a in frames], dtype=torch.float32)
    nb = batch.neighbors(settings["model"]["cutoff"])
    elem = torch.tensor([z.index(int(q)) for q in np.concatenate([a.numbers for a in frames])])
    models = {}
    for v in variants:
        fields, grid, _ = split_variant(settings["variants"][v])
        use_grid_options(grid)
        cfg = pot.PotentialConfig(**{**settings["model"], **fields, "atomic_numbers": z, "avg_num_neighbors": 10.0})
        torch.manual_seed(0)
        models[v] = pot.Potential(cfg)
    n = len(batch.positions)
    gen = torch.Generator().manual_seed(0)
    first = [layer.product for layer in models[variants[0]].interactions]
    a_in = [torch.randn(n, g.irreps_in.dim, generator=gen) for g in first]
    conds = [torch.randn(n, g.layers[0].out_features, generator=gen) for g in first]

    def product_step(model):
        def run():
            loss = 0.0
            for layer, x, c in zip(model.interactions, a_in, conds):
                g = layer.product
                x = x.clone().requires_grad_(True)
                if hasattr(g, "group"):
                    g.group = elem
                (gx,) = torch.autograd.grad(g(x, c).square().sum(), x, create_graph=True)
                loss = loss + gx.square().sum()
            loss.backward()
        return run

    def train_step(model):
        def run():
            out = model(batch, compute_forces=True, training=True, neighbors=nb)
            (out["energy"].square().sum() + out["forces"].square().sum()).backward()
        return run

    rows = {}
    for what, make in (("product layers", product_step), ("training step", train_step)):
        t = interleaved({v: make(models[v]) for v in variants}, repeats=repeats, clock=time.thread_time)
        base = t[variants[0]]["median_s"]
        rows[what] = {v: {"median_ms": 1e3 * t[v]["median_s"], "ratio": t[v]["median_s"] / base} for v in variants}
    return rows


def cost(settings: dict, variants: list[str], out_dir: Path, result_name: str, repeats: int) -> dict:
    """Thread time of each variant's product layers (the ``SphereGridMLP`` of both interactions:
    forward, input gradient with ``create_graph``, backward; the training pattern) and of the
    whole model's training step (energy, forces with ``create_graph``, backward; no optimizer), on
    the benchmark inputs: 10 ethanol test frames (``--work``'s ``ethanol/test.xyz``) and a Cu108
    cell (rattled, seed 0). Ratios to the first variant, interleaved in this process, one thread."""
    import torch
    from ase.build import bulk
    from ase.io import read

    from _common import environment, write_results

    torch.set_num_threads(1)
    cu = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
    cu.rattle(0.05, seed=0)
    inputs = {"ethanol (10 frames, 90 atoms)": (read(WORK / "ethanol" / "test.xyz", index=":10", format="extxyz"),
                                                (1, 6, 8)),
              "Cu108": ([cu], (29,))}
    env0 = environment()
    rows: dict = {}
    for case, (frames, z) in inputs.items():
        for what, r in _cost_case(frames, z, settings, variants, repeats).items():
            rows[f"{case}: {what}"] = r
            print(case, what, {v: round(x["ratio"], 3) for v, x in r.items()}, flush=True)
    env = environment()
    lines = [f"# Cost of the grid-MLP options (thread time, one thread, median of {repeats}, interleaved)", "",
             f"`benchmarks/atoms_mace_accuracy.py cost`; load average {tuple(round(x, 2) for x in env0['loadavg'])} "
             f"-> {tuple(round(x, 2) for x in env['loadavg'])} (shared 2-core machine: provisional). Product "
             "layers: both interactions' `SphereGridMLP`, forward + input gradient with `create_graph` + backward "
             "(the training pattern); training step: the whole model, energy + forces (create_graph) + backward, "
             "no optimizer. Ratio to the first variant.", "",
             "| input: what | " + " | ".join(variants) + " |", "|---|" + "---|" * len(variants)]
    for key, r in rows.items():
        lines.append(f"| {key} | " + " | ".join(f"{r[v]['median_ms']:.2f} ms ({r[v]['ratio']:.2f}x)"
                                                  for v in variants) + " |")
    payload = {"env": env0, "env_end": env, "variants": {v: settings["variants"][v] for v in variants},
               "repeats": repeats, "results": rows}
    write_results(result_name, payload, "\n".join(lines) + "\n", out_dir)
    return payload


# --------------------------------------------------------------------------- probe of the grid MLP
def probe(settings: dict, work: Path, frames: int = 10) -> dict:
    """For each trained grid-MLP model (``--datasets`` x ``--variants``): the std of the two parts of
    the grid MLP's first pre-activation ``t = W_1 f(x) + b_atom`` (the input's part and the per-atom
    conditioning shift) per interaction, on the first ``frames`` test frames: how far the
    polynomial activation is from linear in the messages (docs/potentials.md, session 7)."""
    import torch
    from ase.io import read

    from equikit.data.atoms import AtomsBatch
    from equikit.models.calculator import load_potential

    torch.set_num_threads(1)
    out = {}
    for name, ds in settings["datasets"].items():
        for v in variants_of(ds, settings):
            path = work / name / v / "model.pt"
            if not path.exists() or settings["variants"][v].get("product") != "grid_mlp":
                continue
            use_grid_options(split_variant(settings["variants"][v])[1])
            model = load_potential(path)
            images = read(work / name / "test.xyz", index=f":{frames}", format="extxyz")
            for a in images:
                a.calc = None
            seen = []
            hooks = [layer.product.register_forward_pre_hook(lambda mod, args, put=seen.append: put((mod, args)))
                     for layer in model.interactions]
            model(AtomsBatch.from_atoms(images, dtype=torch.float32), compute_forces=False)
            for h in hooks:
                h.remove()
            rows = []
            with torch.no_grad():
                for mod, (x, *rest) in seen:
                    scale = getattr(mod, "input_scale", 1.0)
                    part = mod.layers[0](mod.to_grid(x * scale)) - mod.layers[0].bias
                    cond = rest[0] if rest and rest[0] is not None else torch.zeros(1)
                    if getattr(mod, "cond_scale", 1.0) != 1.0:
                        cond = cond * mod.cond_scale
                    shift = cond + mod.layers[0].bias
                    rows.append({"input_part_std": float(part.std()), "shift_std": float(shift.std())})
            out[f"{name}/{v}"] = rows
            print(name, v, [{k: round(x, 3) for k, x in r.items()} for r in rows], flush=True)
    return out


# --------------------------------------------------------------------------- main
def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "train-one":
        return train_one(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("stage", choices=("prepare", "train", "evaluate", "cost", "probe"))
    ap.add_argument("--variants", nargs="*", default=None,
                    help="cost: variants to time (the first is the reference); train: only these")
    ap.add_argument("--repeats", type=int, default=15, help="cost: timed calls per variant")
    ap.add_argument("--config", type=Path, default=CONFIG)
    ap.add_argument("--work", type=Path, default=WORK)
    ap.add_argument("--datasets", nargs="*", default=None, help="subset of the config's data sets")
    ap.add_argument("--pid-file", type=Path, default=None, help="train: PID of the running trainer goes here")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--name", default=NAME, help="evaluate: results file name (without extension)")
    args = ap.parse_args(argv)
    settings = load_settings(args.config)
    if args.datasets:
        settings["datasets"] = {k: v for k, v in settings["datasets"].items() if k in args.datasets}
    if args.stage == "prepare":
        import torch

        torch.set_num_threads(args.threads)
        for name, ds in settings["datasets"].items():
            prepare_dataset(name, ds, settings, args.work)
    elif args.stage == "train":
        for name in settings["datasets"]:
            vs = variants_of(settings["datasets"][name], settings)
            if args.variants:  # only these (mace-torch still trains where its model is missing)
                vs = [v for v in vs if v in args.variants]
            train_dataset(name, args.work / name, args.pid_file, vs)
    elif args.stage == "probe":
        if args.variants:
            for ds in settings["datasets"].values():
                ds["variants"] = [v for v in variants_of(ds, settings) if v in args.variants]
        probe(settings, args.work)
    elif args.stage == "cost":
        cost(settings, args.variants or list(settings["variants"]), args.out, args.name, args.repeats)
    else:
        evaluate(settings, args.work, args.out, args.threads, args.name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
