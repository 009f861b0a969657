"""``equikit check MODULE:CALLABLE --action e3 --input 64x100x3``: audit any callable.

(``--group`` is a synonym of ``--action``; ``e3`` is ``e`` on 3D points.)

The target is ``package.module:attribute`` (a class is instantiated without arguments; with
``--factory`` a function is called without arguments to build the model) or ``zoo:NAME`` for
a built-in example. The input is a shape such as ``64x100x3`` (standard normal, seeded) or a
``.pt`` file holding a tensor. ``--action`` names how the group moves the input; ``--equivariant``
applies the same action to the output, otherwise invariance is checked.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from equikit.check import equivariance_error, zoo
from equikit.groups import (
    SE,
    SO,
    Action,
    Compose,
    E,
    FeaturePermutation,
    ImageFlip,
    ImageRot90,
    ImageShift,
    NodePermutation,
    O,
    PointCloud,
    SequenceShift,
    Translation,
)

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _cloud(group):
    return lambda shape: PointCloud(group(shape[-1]))


ACTIONS: dict[str, tuple[str, Callable[[tuple[int, ...]], Action]]] = {
    "so": ("rotations of points (..., d)", _cloud(SO)),
    "o": ("rotations and reflections of points (..., d)", _cloud(O)),
    "e": ("rigid motions incl. reflections of points (..., d)", _cloud(E)),
    "se": ("rigid motions of points (..., d)", _cloud(SE)),
    "translation": ("translations of points (..., d)", _cloud(Translation)),
    "perm": ("permutations of dim -2 (sets, nodes)", lambda s: NodePermutation(s[-2], node_dim=-2)),
    "e-perm": ("permutations of points x E(d)",
               lambda s: Compose(NodePermutation(s[-2], node_dim=-2), PointCloud(E(s[-1])))),
    "features": ("permutations of the last dim", lambda s: FeaturePermutation(s[-1])),
    "shift2d": ("circular shifts of images (..., H, W)", lambda s: ImageShift((s[-2], s[-1]))),
    "rot90": ("quarter turns of square images (..., H, H)", lambda s: ImageRot90()),
    "flip": ("left-right mirror of images (..., H, W)", lambda s: ImageFlip()),
    "seqshift": ("circular shifts of sequences (..., L, C)", lambda s: SequenceShift(s[-2])),
}
# the usual names with the dimension spelled out: e3 = e on (..., 3), ...
for _name, _group in (("so", SO), ("o", O), ("e", E), ("se", SE)):
    ACTIONS[f"{_name}3"] = (
        ACTIONS[_name][0].replace("(..., d)", "(..., 3)"),
        lambda s, _g=_group: PointCloud(_g(3)),
    )


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "check", help="measure the equivariance error of a callable",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("target", help="package.module:callable, or zoo:NAME")
    p.add_argument("--action", "--group", dest="action", choices=sorted(ACTIONS),
                   help="how the group moves the input: " + "; ".join(f"{k}: {v[0]}" for k, v in ACTIONS.items()))
    p.add_argument("--input", help="shape like 64x100x3, or a .pt file with a tensor")
    p.add_argument("--equivariant", action="store_true", help="apply the action to outputs too")
    p.add_argument("--factory", action="store_true", help="call the target to build the model")
    p.add_argument("--samples", type=int, default=16, help="group elements to sample (16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="float32,float64", help="comma-separated dtypes")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def _load_target(spec: str, factory: bool):
    if ":" not in spec or spec.startswith(":") or spec.endswith(":"):
        raise SystemExit(f"equikit check: target must look like package.module:callable, got {spec!r}")
    module_name, attr = spec.split(":", 1)
    module = importlib.import_module(module_name)
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise SystemExit(f"equikit check: {module_name} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if isinstance(obj, type) or factory:
        obj = obj()
    if not callable(obj):
        raise SystemExit(f"equikit check: {spec} is not callable")
    return obj


def _load_input(spec: str, seed: int) -> torch.Tensor:
    if spec.endswith(".pt") or Path(spec).is_file():
        x = torch.load(spec, weights_only=True)
        if not isinstance(x, torch.Tensor):
            raise SystemExit(f"equikit check: {spec} must hold one tensor, got {type(x).__name__}")
        return x.double()
    try:
        shape = tuple(int(s) for s in spec.lower().split("x"))
    except ValueError:
        raise SystemExit(f"equikit check: --input must be a shape like 64x100x3 or a .pt file, got {spec!r}") from None
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen, dtype=torch.float64)


def _rows(args) -> list[dict]:
    if args.target.startswith("zoo:"):
        entry = zoo.get(args.target[4:])
        cases = [(entry.model(dt), entry.input(dt), entry.in_action, entry.out_action, name)
                 for name, dt in _dtypes(args)]
    else:
        f = _load_target(args.target, args.factory)
        if not args.action or not args.input:
            raise SystemExit("equikit check: --action and --input are required for a user target")
        x = _load_input(args.input, args.seed)
        action = ACTIONS[args.action][1](tuple(x.shape))
        out_action = action if args.equivariant else None
        cases = []
        for name, dt in _dtypes(args):
            model = copy.deepcopy(f).to(dt) if isinstance(f, torch.nn.Module) else f
            cases.append((model, x.to(dt), action, out_action, name))
    rows = []
    for model, x, action, out_action, name in cases:
        report = equivariance_error(model, x, action, out_action, n_samples=args.samples, generator=args.seed)
        row = report.to_dict()
        row["dtype"] = name
        rows.append(row)
    return rows


def _dtypes(args):
    names = [d.strip() for d in args.dtype.split(",") if d.strip()]
    bad = [d for d in names if d not in DTYPES]
    if bad:
        raise SystemExit(f"equikit check: --dtype must be from {sorted(DTYPES)}, got {bad}")
    return [(d, DTYPES[d]) for d in names]


def format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def run(args) -> int:
    try:
        rows = _rows(args)
    except (ValueError, TypeError) as err:  # bad target/input/action: say so without a traceback
        print(f"equikit check: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"{args.target}: {rows[0]['kind']} under {rows[0]['group']}")
        print(format_table(
            ["dtype", "rel max", "rel mean", "abs max", "rtol", "consistency", "degenerate", "verdict"],
            [[r["dtype"], f"{r['rel_max']:.2e}", f"{r['rel_mean']:.2e}", f"{r['abs_max']:.2e}",
              f"{r['default_rtol']:g}",
              "-" if r["consistency"] is None else f"{100 * r['consistency']:.1f}%",
              str(r["degenerate_inputs"]), "PASS" if r["passed"] else "FAIL"] for r in rows],
        ))
    return 0 if all(r["passed"] for r in rows) else 1
