"""``equikit demo``: audit the built-in example models under their groups.

Every equivariant model must pass and every negative control must be flagged, in float32
and float64; the table shows the relative errors and the margin between the two classes.
"""

from __future__ import annotations

import torch

from equikit.check import equivariance_error, zoo
from equikit.cli.check import format_table


class _Harmonics(torch.nn.Module):
    """Spherical harmonics as a model: ``Y(R x) = D(R) Y(x)`` under O(3)."""

    def __init__(self, lmax: int):
        super().__init__()
        self.lmax = lmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from equikit.o3 import spherical_harmonics

        return spherical_harmonics(self.lmax, x)


def _o3_entries() -> list[zoo.ZooEntry]:
    """Entries of the O(3) layer: harmonics with the right irreps, and with the parity wrong."""
    try:
        from equikit.groups import O, PointCloud
        from equikit.o3 import Irreps, IrrepsRep
    except ImportError:  # the o3 layer is not part of this checkout
        return []
    lmax = 6
    return [
        zoo.ZooEntry("harmonics", f"spherical harmonics l <= {lmax}", lambda: _Harmonics(lmax), (64, 3),
                     PointCloud(O(3)), IrrepsRep(Irreps.spherical_harmonics(lmax)), True),
        zoo.ZooEntry("harmonics+wrong-parity", "the same, declared as all-even irreps",
                     lambda: _Harmonics(lmax), (64, 3), PointCloud(O(3)),
                     IrrepsRep(Irreps.spherical_harmonics(lmax, p=1)), False, "harmonics"),
    ]


def _weights_entries() -> list[zoo.ZooEntry]:
    """Weight space: an MLP's output, as a function of its weights, is invariant under
    relabelling the hidden units (``WeightSpaceAction``); reading unit 0 by index is not."""
    try:
        from equikit.weights import MLP, WeightSpaceAction, mlp_spec
    except ImportError:
        return []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = MLP(6, (24, 24), 3)
    x = torch.randn(16, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    action = WeightSpaceAction(mlp_spec(net), "h1")

    def output(sd):
        return torch.func.functional_call(net, sd, (x.to(sd["layers.0.weight"].dtype),))

    def make_input(dtype, gen):
        return {k: v.detach().to(dtype) for k, v in net.state_dict().items()}

    return [
        zoo.ZooEntry("mlp-weight-space", "MLP output as a function of its weights",
                     lambda: output, (), action, None, True, make_input=make_input),
        zoo.ZooEntry("mlp-weight-space+unit0", "the same plus hidden unit 0's bias read by index",
                     lambda: lambda sd: output(sd) + sd["layers.1.bias"][0], (), action, None, False,
                     "mlp-weight-space", make_input=make_input),
    ]


def _symmetrize_entries() -> list[zoo.ZooEntry]:
    """Frame averaging makes the non-invariant flat MLP exactly E(3)-invariant; the same
    wrapper with an SE(3) frame (no reflections) is caught when reflections are sampled."""
    try:
        from equikit.groups import SE, E, PointCloud
        from equikit.symmetrize import PCAFrame, Symmetrize
    except ImportError:
        return []
    shape = (16, zoo.N_POINTS, 3)
    return [
        zoo.ZooEntry("flat-mlp+frame-avg", "flat MLP averaged over its PCA frame",
                     lambda: Symmetrize(zoo.FlatMLP(), PCAFrame(E(3)), PointCloud(E(3))), shape,
                     PointCloud(E(3)), None, True),
        zoo.ZooEntry("flat-mlp+se3-frame", "the same with an SE(3) frame (no mirrors)",
                     lambda: Symmetrize(zoo.FlatMLP(), PCAFrame(SE(3)), PointCloud(SE(3))), shape,
                     PointCloud(E(3)), None, False, "flat-mlp+frame-avg"),
    ]


def _dynamics_entries() -> list[zoo.ZooEntry]:
    """EGNN predicts E(3)-equivariant positions of a charged 5-body system; a plain GNN on
    coordinates does not."""
    try:
        from equikit.data.nbody import complete_edge_index
        from equikit.groups import E, PointCloud
        from equikit.models import EGNN, GNN
    except ImportError:
        return []
    in_action = PointCloud(E(3), vectors=("vel",), scalars=("edge_index", "edge_attr"))

    def make_input(dtype, gen):
        charges = torch.randint(0, 2, (5, 1), generator=gen).to(torch.float64) * 2 - 1
        ei = complete_edge_index(5)
        return {"pos": torch.randn(5, 3, generator=gen, dtype=torch.float64).to(dtype),
                "vel": 0.5 * torch.randn(5, 3, generator=gen, dtype=torch.float64).to(dtype),
                "edge_index": ei, "edge_attr": (charges[ei[0]] * charges[ei[1]]).to(dtype)}

    def wrap(model):
        return lambda d: model.to(d["pos"].dtype)(d["pos"], d["vel"], d["edge_index"], d["edge_attr"])

    return [
        zoo.ZooEntry("egnn", "EGNN on a charged 5-body system", lambda: wrap(EGNN(hidden=32, n_layers=3)), (),
                     in_action, PointCloud(E(3)), True, make_input=make_input),
        zoo.ZooEntry("gnn", "a plain GNN on coordinates", lambda: wrap(GNN(hidden=32, n_layers=3)), (),
                     in_action, PointCloud(E(3)), False, "egnn", make_input=make_input),
    ]


def _graph_entries() -> list[zoo.ZooEntry]:
    """A GIN graph classifier is invariant under relabelling the nodes of a batch of three
    graphs; the same model fed node ids as a feature is not."""
    try:
        from equikit.data.graph import GraphBatch, collate_graphs
        from equikit.models import GraphModel, GraphModelConfig
    except ImportError:
        return []
    sizes = (6, 4, 7)

    def make_batch(dtype, gen):
        graphs = []
        for n in sizes:
            upper = torch.triu(torch.rand(n, n, generator=gen) < 0.45, diagonal=1)
            ei = (upper | upper.T).nonzero().T.contiguous()
            graphs.append(GraphBatch(x=torch.randn(n, 3, generator=gen, dtype=torch.float64).to(dtype), edge_index=ei))
        return collate_graphs(graphs)

    action = make_batch(torch.float64, torch.Generator().manual_seed(1)).permutation_action()

    def wrap(model, node_ids: bool):
        def f(d):
            g = GraphBatch.from_dict(d, num_graphs=len(sizes))
            if node_ids:
                x = g.x + torch.arange(g.num_nodes, dtype=g.x.dtype).unsqueeze(-1) / 7
                g = GraphBatch(x=x, edge_index=g.edge_index, batch=g.batch, num_graphs=len(sizes))
            return model.to(g.x.dtype)(g)

        return f

    def make(node_ids):
        cfg = GraphModelConfig(in_channels=3, out_channels=2, hidden=16, n_layers=3, layer="gin")
        return lambda: wrap(GraphModel(cfg).eval(), node_ids)

    return [
        zoo.ZooEntry("gin-graph", "GIN graph classifier on a batch of 3 graphs", make(False), (), action, None,
                     True, make_input=lambda dt, g: make_batch(dt, g).to_dict()),
        zoo.ZooEntry("gin+node-ids", "the same reading node ids as a feature", make(True), (), action, None,
                     False, "gin-graph", make_input=lambda dt, g: make_batch(dt, g).to_dict()),
    ]


def _potential_entries() -> list[zoo.ZooEntry]:
    """A MACE-style potential: energy invariant and forces equivariant under E(3); a variant whose
    radial input reads the x-component of the edge vector is not."""
    try:
        from equikit.data.atoms import AtomsBatch
        from equikit.groups import E, PointCloud
        from equikit.models.potential import Potential, PotentialConfig
    except ImportError:
        return []

    class XComponent(Potential):
        def edge_features(self, vec):
            r, sh = super().edge_features(vec)
            return r + 0.3 * vec[:, 0], sh

    cfg = dict(atomic_numbers=(1, 8), e0=(-0.5, -2.0), hidden_irreps="4x0e + 4x1o", max_ell=2, correlation=3,
               radial_mlp=(8,), cutoff=3.0, num_interactions=2, avg_num_neighbors=4.0, readout_hidden=4)

    def make_input(dtype, gen):
        pos = (torch.rand(7, 3, generator=gen, dtype=torch.float64) * 3.0).to(dtype)
        return {"pos": pos, "numbers": torch.tensor([8, 1, 1, 8, 1, 8, 1])}

    def wrap(cls):
        def build():
            model = cls(PotentialConfig(**cfg, dtype="float64"))

            def f(d):
                m = model.to(d["pos"].dtype)
                b = AtomsBatch.from_arrays(positions=d["pos"], numbers=d["numbers"], natoms=[d["pos"].shape[0]])
                out = m(b)
                return {"energy": out["energy"].detach(), "forces": out["forces"].detach()}

            return f

        return build

    in_action = PointCloud(E(3), scalars=("numbers",))
    out_action = PointCloud(E(3), pos=None, vectors=("forces",), scalars=("energy",))
    return [
        zoo.ZooEntry("mace-potential", "MACE-style potential: energy and forces of 7 atoms", wrap(Potential), (),
                     in_action, out_action, True, make_input=make_input),
        zoo.ZooEntry("potential+x-comp", "the same with the edge x-component in the radial input",
                     wrap(XComponent), (), in_action, out_action, False, "mace-potential", make_input=make_input),
    ]


def entries() -> list[zoo.ZooEntry]:
    """What the demo audits: the check zoo plus one pair per capability that has landed."""
    return (zoo.zoo() + _o3_entries() + _weights_entries() + _symmetrize_entries() + _dynamics_entries()
            + _graph_entries() + _potential_entries())


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="audit the example zoo (what `make demo` runs)")
    p.add_argument("--samples", type=int, default=16, help="group elements per check (16)")
    p.set_defaults(func=run)


def audit(n_samples: int = 16) -> list[dict]:
    """One row per zoo entry with the relative error in float32 and float64."""
    rows = []
    for entry in entries():
        row = {"entry": entry, "rel": {}, "passed": {}}
        for dt in (torch.float32, torch.float64):
            report = equivariance_error(
                entry.model(dt), entry.input(dt), entry.in_action, entry.out_action,
                n_samples=n_samples, batched=False if entry.make_input else None,
            )
            row["rel"][dt] = report.rel_max
            row["passed"][dt] = report.passed()
        row["ok"] = all(p == entry.expect_equivariant for p in row["passed"].values())
        rows.append(row)
    return rows


def run(args) -> int:
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    rows = audit(args.samples)
    print("equikit demo: the checker audits the example zoo (equivariant models and negative controls)\n")
    table = []
    for r in rows:
        e = r["entry"]
        expected = ("invariant" if e.out_action is None else "equivariant") if e.expect_equivariant else "broken"
        verdict = "equivariant" if all(r["passed"].values()) else "flagged"
        table.append([
            e.name, e.description, e.group_name, expected,
            f"{r['rel'][torch.float32]:.1e}", f"{r['rel'][torch.float64]:.1e}",
            verdict + (" (ok)" if r["ok"] else " (UNEXPECTED)"),
        ])
    print(format_table(["model", "what", "group", "expected", "rel err f32", "rel err f64", "checker says"], table))
    for dt, name in ((torch.float32, "float32"), (torch.float64, "float64")):
        good = max(r["rel"][dt] for r in rows if r["entry"].expect_equivariant)
        bad = min(r["rel"][dt] for r in rows if not r["entry"].expect_equivariant)
        print(f"\n{name}: worst equivariant model {good:.1e}, best negative control {bad:.1e}"
              f" -> margin {bad / max(good, 1e-300):.1e}x", end="")
    print()
    n_bad = sum(not r["ok"] for r in rows)
    print(f"\n{len(rows) - n_bad}/{len(rows)} verdicts as expected")
    return 1 if n_bad else 0
