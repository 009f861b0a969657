r"""A MACE-style interatomic potential (Batatia et al. 2022) composed from :mod:`equikit.nn`.

Per interaction ``t = 1..T`` (``h^0`` = a learned embedding of the element, ``C x 0e``):

.. math::
    m_i = \frac{1}{\bar n} \sum_{j \in N(i)} R(r_{ij}) \otimes_{uvu} \big(W_{up} h^{t-1}_j,\ Y(\hat r_{ij})\big), \quad
    A_i = W_{A}\, m_i, \quad
    h^t_i = W_{B}\, \mathrm{SC}_{z_i}(A_i) + W_{skip} h^{t-1}_i

with ``R`` the radial weights (Bessel basis times polynomial envelope through an MLP, or a
cubic spline), ``Y`` the spherical harmonics up to ``max_ell``, ``SC`` the symmetric
contraction up to ``correlation`` with per-element weights, and ``\bar n`` =
``avg_num_neighbors``. Atomic energy ``E_i = E0[z_i] + sum_t readout_t(h^t_i)`` (linear for
early layers, a one-hidden-layer MLP on the scalars of the last); the structure's energy is
the sum over its atoms. Forces ``F = -dE/dpos`` and stress ``sigma = (1/V) dE/d(strain)``
(ASE's sign convention) come from autograd. See ``docs/potentials.md``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from equikit.data.atoms import AtomsBatch
from equikit.data.neighbors import edge_vectors, radius_graph
from equikit.nn import (
    BesselBasis,
    Linear,
    PolynomialCutoff,
    SphereGridMLP,
    SplineRadial,
    SymmetricContraction,
    TensorProduct,
)
from equikit.nn._mlp import make_mlp
from equikit.o3 import Irreps, spherical_harmonics
from equikit.tp import BACKENDS, SYMMETRIC_BACKENDS, GauntEdgeMatrix, channelwise, gaunt_product

_GAUNT_BACKENDS = ("sphere_grid", "gaunt_fourier")
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


# --------------------------------------------------------------------------- configuration
def element_indices(z_to_index: torch.Tensor, numbers, elements, where: str) -> torch.Tensor:
    """Atomic numbers -> rows of ``z_to_index`` (a 119-entry table, -1 for absent elements);
    TypeError / ValueError naming ``where`` for non-integer input or unknown elements."""
    if not isinstance(numbers, torch.Tensor) or numbers.is_floating_point():
        raise TypeError(f"{where}: `numbers` must be an integer tensor, got {numbers!r}")
    ok = (numbers >= 0) & (numbers < 119)
    idx = torch.where(ok, z_to_index[numbers.clamp(0, 118)], -1)
    if torch.compiler.is_compiling():  # no graph break: a runtime assert inside the compiled graph
        torch._assert_async((idx >= 0).all(), f"{where}: atomic numbers not in the model's elements {list(elements)}")
    elif bool((idx < 0).any()):
        bad = sorted(set(numbers[idx < 0].tolist()))
        raise ValueError(f"{where}: atomic numbers {bad} are not in the model's elements "
                         f"{list(elements)} ({where}Config.atomic_numbers)")
    return idx


def check_elements(atomic_numbers, e0, where: str) -> tuple[tuple[int, ...], tuple[float, ...] | None]:
    """``atomic_numbers`` as a tuple of distinct ints in 1..118 and ``e0`` (None or one reference
    energy per element) as floats; ValueError naming ``where`` and the field otherwise."""
    zs = tuple(atomic_numbers)
    if not zs or any(isinstance(z, bool) or not isinstance(z, int) or not 1 <= z <= 118 for z in zs):
        raise ValueError(f"{where}: `atomic_numbers` must be a non-empty list of ints in 1..118, "
                         f"got {atomic_numbers!r}")
    if len(set(zs)) != len(zs):
        raise ValueError(f"{where}: `atomic_numbers` has duplicates: {atomic_numbers!r}")
    if e0 is None:
        return zs, None
    e0 = tuple(float(e) for e in e0)
    if len(e0) != len(zs):
        raise ValueError(f"{where}: `e0` needs one energy per element ({len(zs)}), got {len(e0)}")
    return zs, e0


@dataclass
class PotentialConfig:
    """Configuration of :class:`Potential` (also readable from / writable to YAML).

    Fields:
        atomic_numbers: the elements the model knows, e.g. ``(29,)`` or ``(1, 6, 8)``.
        e0: per-element reference energies (eV), same order; default zeros.
        cutoff: neighbour cutoff (Angstrom).
        num_radial: Bessel functions (``radial="bessel"``).
        radial: ``"bessel"`` (Bessel x envelope -> MLP ``radial_mlp``) or ``"spline"``
            (:class:`~equikit.nn.SplineRadial`, ``spline_intervals`` intervals).
        radial_mlp: hidden widths of the radial MLP.
        spline_intervals: intervals of the spline radial function.
        envelope_p: exponent of the polynomial cutoff envelope.
        radial_param: parametrisation of the Bessel radial MLP (``radial="bessel"``): ``"torch"``
            (default; PyTorch's ``nn.Linear`` init, weights ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``) or
            ``"e3nn"`` (MACE's ``FullyConnectedNet``: weights ``W_raw ~ N(0, 1)`` used as
            ``W_raw / sqrt(fan_in)``, SiLU scaled to unit second moment, :class:`ScaledLinear`). The same
            functions (a weight conversion maps one onto the other); the initial radial weights are ~40x
            larger with ``"e3nn"`` and Adam's steps, which act on ``W_raw``, move the effective weights
            ``sqrt(fan_in)`` times less. On ethanol at 500 steps ``"e3nn"`` lowered cg's test force
            MAE by ~20 % (docs/potentials.md, session 8).
        max_ell: highest degree of the spherical harmonics (and of the messages ``A``).
        hidden_irreps: node features, every block with the same multiplicity ``C``,
            natural parities (``0e + 1o + 2e ...``), e.g. ``"32x0e + 32x1o"``.
        correlation: order of the symmetric contraction (1..4).
        num_interactions: number of interaction layers (>= 1).
        avg_num_neighbors: the message sum is divided by this.
        readout_hidden: width of the last layer's readout MLP.
        tp_backend: tensor-product backend of the edge convolution (``equikit.tp.BACKENDS``:
            ``"sparse_cg"``, ``"naive"``, ``"sphere_grid"``, ``"gaunt_fourier"``).
        tp_product: the edge convolution. ``"clebsch_gordan"``: MACE's channelwise product with
            one radial weight per edge, channel and path. ``"gaunt"``: the unweighted Gaunt
            product (pointwise product of spherical functions, Luo et al. 2024) of the
            neighbour features and ``Y``, with radial weights per edge, channel and degree
            applied before (to each ``l_1`` block) and after (to each ``l_out`` block); the only
            form the grid backends (``sphere_grid``, ``gaunt_fourier``) can run. ``"auto"``
            (default): ``"gaunt"`` for the grid backends, ``"clebsch_gordan"`` otherwise.
        gaunt_edge: how the Gaunt edge product runs when ``tp_backend`` is not a grid backend:
            ``"matrix"`` (per edge the channel-free matrix ``T = Y @ G'`` of the Gaunt tensor, then a
            ``(C, d_in) @ (d_in, d_out)`` product per edge, scaled and summed at the centres by one
            kernel without an ``(E, C d_out)`` message tensor, :class:`~equikit.tp.GauntEdgeMatrix`);
            ``"fused"`` (the ``tp_backend`` executor's
            weighted channelwise product with Gaunt coefficients and path weights ``w_in[l1] w_out[l3]``);
            ``"auto"`` (default): ``"matrix"`` for ``sparse_cg`` (the faster, docs/potentials.md),
            ``"fused"`` for ``naive`` (the oracle). The same function either way; ignored for
            Clebsch-Gordan products and grid backends.
        symmetric_backend: executor of the symmetric contraction (``"monomial"``, ``"recursive"``,
            ``"naive"``: the same function; ``"monomial"`` is the fastest, docs/potentials.md).
        product: the many-body product of each layer: ``"symmetric_contraction"`` (MACE, per-element
            weights) or ``"grid_mlp"`` (the "grid + MLP" variant: :class:`~equikit.nn.SphereGridMLP`
            evaluates ``A`` on a sphere grid, mixes channels per grid point with a one-hidden-layer
            MLP whose activation is the polynomial ``sum_{k=1..correlation} t^k / k!``, and
            projects back; the grid is exact for that degree, so the layer is exactly
            equivariant; it reaches the pointwise (Gaunt) products of ``A`` up to order
            ``correlation``, no per-element weights unless ``grid_condition`` adds them).
        grid_hidden: hidden width of the grid MLP (``product="grid_mlp"``), an int or a tuple of
            widths (several hidden layers: the band limit is ``correlation ** depth`` times
            larger, so is the exact grid).
        grid_condition: what shifts the grid MLP's first hidden layer per atom (the same shift at
            every grid point, so exactness and equivariance are kept): ``"none"``; ``"element"``
            (a learned bias per element, ``len(atomic_numbers) x grid_hidden[0]`` parameters: the
            per-element weights MACE's symmetric contraction has, which let the polynomial mix its
            powers differently per element); ``"scalars"`` (a linear map of the layer's input
            scalars: in the first layer the element embedding, later the learned invariants).
        grid_powers: the coefficients ``a_k`` of the grid MLP's polynomial activation
            ``sum_k a_k t^k / k!``: ``"fixed"`` (``a_k = 1``) or ``"element"`` (learned per element,
            hidden unit of the first layer and power ``k``, init 1: per-element weights of each
            correlation order, as the symmetric contraction has).
        grid_gain: the grid MLP's input times ``g`` and its output divided by ``g`` (``g > 0``; 1:
            off). With ``g > 1`` the higher powers of the polynomial activation weigh more against
            the linear part: trained ``facet_cond`` models had a cubic term ~2 % of the linear one
            (docs/potentials.md, session 7); ``facet_gain_el`` uses 5.
        grid_output: ``"shared"`` (the grid MLP's last layer on the grid, shared by all atoms) or
            ``"element"`` (the last layer after the projection, per output degree, with its own
            weights per element: per-element weights as MACE's symmetric contraction has).
        grid_param: parametrisation of the grid MLP's hidden ``nn.Linear`` weights and of the conditioning
            map (``grid_condition="scalars"``): ``"torch"`` (default; the weights are the parameters) or
            ``"fan_in"`` (the parameters are ``W_raw = W sqrt(fan_in)`` and the layer uses
            ``W_raw / sqrt(fan_in)``: the same function and initial values, but Adam's steps, which act
            on ``W_raw``, move ``W`` ``sqrt(fan_in)`` times less, as in e3nn's parametrisation). On ethanol
            at 500 steps ``"fan_in"`` lowered ``facet_gain_el``'s test force MAE by ~10 %
            (docs/potentials.md, session 8).
        dtype: ``"float32"`` or ``"float64"``, the parameters' dtype.
    """

    atomic_numbers: tuple[int, ...] = (29,)
    e0: tuple[float, ...] | None = None
    cutoff: float = 5.0
    num_radial: int = 8
    radial: str = "bessel"
    radial_mlp: tuple[int, ...] = (64, 64, 64)
    spline_intervals: int = 16
    envelope_p: int = 6
    radial_param: str = "torch"
    max_ell: int = 3
    hidden_irreps: str = "32x0e + 32x1o"
    correlation: int = 3
    num_interactions: int = 2
    avg_num_neighbors: float = 10.0
    readout_hidden: int = 16
    tp_backend: str = "sparse_cg"
    tp_product: str = "auto"
    gaunt_edge: str = "auto"
    symmetric_backend: str = "monomial"
    product: str = "symmetric_contraction"
    grid_hidden: int | tuple[int, ...] = 32
    grid_condition: str = "none"
    grid_powers: str = "fixed"
    grid_gain: float = 1.0
    grid_output: str = "shared"
    grid_param: str = "torch"
    dtype: str = "float64"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` / ``TypeError`` naming the field for any inconsistent value."""
        w = "PotentialConfig"
        self.atomic_numbers, self.e0 = check_elements(self.atomic_numbers, self.e0, w)
        for name in ("cutoff", "avg_num_neighbors"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"{w}: `{name}` must be a number > 0, got {v!r}")
        for name, lo in (("num_radial", 1), ("spline_intervals", 1), ("envelope_p", 2), ("max_ell", 0),
                         ("correlation", 1), ("num_interactions", 1), ("readout_hidden", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{w}: `{name}` must be an int >= {lo}, got {v!r}")
        if self.correlation > 4:
            raise ValueError(f"{w}: `correlation` must be <= 4 (the symmetric basis is built up to 4), "
                             f"got {self.correlation}")
        if self.radial not in ("bessel", "spline"):
            raise ValueError(f"{w}: `radial` must be 'bessel' or 'spline', got {self.radial!r}")
        if self.radial_param not in ("torch", "e3nn"):
            raise ValueError(f"{w}: `radial_param` must be 'torch' or 'e3nn', got {self.radial_param!r}")
        if self.radial_param != "torch" and self.radial != "bessel":
            raise ValueError(f"{w}: `radial_param` {self.radial_param!r} parametrises the radial MLP; it needs "
                             f"radial='bessel', got radial={self.radial!r} (the spline has no MLP)")
        self.radial_mlp = tuple(self.radial_mlp)
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in self.radial_mlp):
            raise ValueError(f"{w}: `radial_mlp` must be positive ints, got {self.radial_mlp!r}")
        if self.tp_backend not in BACKENDS:
            raise ValueError(f"{w}: unknown `tp_backend` {self.tp_backend!r}; available: {sorted(BACKENDS)}")
        if self.tp_product not in ("auto", "clebsch_gordan", "gaunt"):
            raise ValueError(f"{w}: `tp_product` must be 'auto', 'clebsch_gordan' or 'gaunt', got {self.tp_product!r}")
        if self.tp_product == "clebsch_gordan" and self.tp_backend in _GAUNT_BACKENDS:
            raise ValueError(f"{w}: tp_backend {self.tp_backend!r} only computes Gaunt products; use "
                             "tp_product='gaunt' (or 'auto')")
        if self.gaunt_edge not in ("auto", "matrix", "fused"):
            raise ValueError(f"{w}: `gaunt_edge` must be 'auto', 'matrix' or 'fused', got {self.gaunt_edge!r}")
        if self.gaunt_edge == "matrix" and self.tp_backend in _GAUNT_BACKENDS:
            raise ValueError(f"{w}: gaunt_edge='matrix' replaces the edge product's executor, but tp_backend "
                             f"{self.tp_backend!r} is a grid backend; use tp_backend='sparse_cg' or gaunt_edge='auto'")
        if self.gaunt_edge == "matrix" and self.tp_product != "gaunt" and self.tp_backend not in _GAUNT_BACKENDS:
            raise ValueError(f"{w}: gaunt_edge='matrix' runs the Gaunt edge product; it needs tp_product='gaunt', "
                             f"got tp_product={self.tp_product!r}")
        if self.symmetric_backend not in SYMMETRIC_BACKENDS:
            raise ValueError(f"{w}: unknown `symmetric_backend` {self.symmetric_backend!r}; "
                             f"available: {sorted(SYMMETRIC_BACKENDS)}")
        if self.product not in ("symmetric_contraction", "grid_mlp"):
            raise ValueError(f"{w}: `product` must be 'symmetric_contraction' or 'grid_mlp', got {self.product!r}")
        gh = self.grid_hidden
        if isinstance(gh, (list, tuple)):
            gh = self.grid_hidden = tuple(gh)
        widths = gh if isinstance(gh, tuple) else (gh,)
        if not widths or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in widths):
            raise ValueError(f"{w}: `grid_hidden` must be an int >= 1 or a non-empty list of them, got {gh!r}")
        if self.grid_condition not in ("none", "element", "scalars"):
            raise ValueError(f"{w}: `grid_condition` must be 'none', 'element' or 'scalars', "
                             f"got {self.grid_condition!r}")
        if self.grid_powers not in ("fixed", "element"):
            raise ValueError(f"{w}: `grid_powers` must be 'fixed' or 'element', got {self.grid_powers!r}")
        if self.grid_powers != "fixed" and len(widths) != 1:
            raise ValueError(f"{w}: `grid_powers` {self.grid_powers!r} needs one hidden layer in the grid MLP, "
                             f"got grid_hidden={gh!r}")
        if self.grid_powers != "fixed" and self.product != "grid_mlp":
            raise ValueError(f"{w}: `grid_powers` {self.grid_powers!r} is the grid MLP's activation; it needs "
                             f"product='grid_mlp', got product={self.product!r}")
        if self.grid_condition != "none" and self.product != "grid_mlp":
            raise ValueError(f"{w}: `grid_condition` {self.grid_condition!r} conditions the grid MLP; it needs "
                             f"product='grid_mlp', got product={self.product!r}")
        g = self.grid_gain
        if isinstance(g, bool) or not isinstance(g, (int, float)) or not math.isfinite(g) or g <= 0:
            raise ValueError(f"{w}: `grid_gain` must be a finite number > 0, got {g!r}")
        if self.grid_output not in ("shared", "element"):
            raise ValueError(f"{w}: `grid_output` must be 'shared' or 'element', got {self.grid_output!r}")
        if self.grid_param not in ("torch", "fan_in"):
            raise ValueError(f"{w}: `grid_param` must be 'torch' or 'fan_in', got {self.grid_param!r}")
        if self.grid_param != "torch" and self.product != "grid_mlp":
            raise ValueError(f"{w}: `grid_param` {self.grid_param!r} parametrises the grid MLP; it needs "
                             f"product='grid_mlp', got product={self.product!r}")
        if (g != 1.0 or self.grid_output != "shared") and self.product != "grid_mlp":
            raise ValueError(f"{w}: `grid_gain` / `grid_output` set the grid MLP; they need product='grid_mlp', "
                             f"got product={self.product!r}")
        if self.dtype not in _DTYPES:
            raise ValueError(f"{w}: `dtype` must be 'float32' or 'float64', got {self.dtype!r}")
        try:
            irreps = Irreps(self.hidden_irreps)
        except Exception as err:
            raise ValueError(f"{w}: `hidden_irreps` {self.hidden_irreps!r} is not an irreps string ({err})") from err
        muls = {m.mul for m in irreps}
        if len(muls) != 1 or irreps[0].ir.l != 0 or irreps[0].ir.p != 1:
            raise ValueError(f"{w}: `hidden_irreps` must start with scalars '0e' and use one multiplicity C for every "
                             f"block (e.g. '32x0e + 32x1o'), got {self.hidden_irreps!r}")
        ls = [m.ir.l for m in irreps]
        if len(set(ls)) != len(ls) or any(m.ir.p != (-1) ** m.ir.l for m in irreps):
            raise ValueError(f"{w}: `hidden_irreps` must hold each degree once with natural parity (0e, 1o, 2e, 3o), "
                             f"got {self.hidden_irreps!r}")
        if max(ls) > self.max_ell:
            raise ValueError(f"{w}: `hidden_irreps` degrees must be <= max_ell = {self.max_ell}, "
                             f"got {self.hidden_irreps!r}")

    # --------------------------------------------------------------------- YAML
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> PotentialConfig:
        if not isinstance(data, dict):
            raise TypeError(f"PotentialConfig.from_dict: expected a mapping, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"PotentialConfig.from_dict: unknown fields {unknown}; known: {sorted(names)}")
        return cls(**data)

    def to_yaml(self, path: str | Path) -> None:
        """Write the configuration as YAML."""
        import yaml

        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_yaml(cls, path: str | Path) -> PotentialConfig:
        """Read a configuration written by :meth:`to_yaml` (or by hand).

        >>> import pathlib, tempfile
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "potential.yaml"
        >>> PotentialConfig(atomic_numbers=(1, 8), hidden_irreps="8x0e + 8x1o").to_yaml(p)
        >>> PotentialConfig.from_yaml(p).atomic_numbers
        (1, 8)
        """
        import yaml

        path = Path(path)
        if not path.is_file():
            raise ValueError(f"PotentialConfig.from_yaml: no file at {str(path)!r}")
        return cls.from_dict(yaml.safe_load(path.read_text()) or {})


# --------------------------------------------------------------------------- dataset statistics
def average_num_neighbors(batch: AtomsBatch, cutoff: float) -> float:
    """Mean number of neighbours within ``cutoff`` per atom (periodic images counted), the value
    for :attr:`PotentialConfig.avg_num_neighbors`.

    >>> from equikit.data.atoms import AtomsBatch
    >>> b = AtomsBatch.from_arrays(positions=torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [5.0, 0, 0]]),
    ...                            numbers=torch.tensor([1, 1, 1]), natoms=torch.tensor([3]))
    >>> average_num_neighbors(b, 2.0)  # one pair: 2 directed edges over 3 atoms
    0.6666666666666666
    """
    if not isinstance(batch, AtomsBatch):
        raise TypeError(f"average_num_neighbors: `batch` must be an AtomsBatch, got {type(batch).__name__}")
    return batch.neighbors(float(cutoff)).edge_index.shape[1] / len(batch.positions)


def fit_reference_energies(batch: AtomsBatch, atomic_numbers) -> tuple[float, ...]:
    r"""Per-element reference energies ``E0`` by least squares on the composition:
    ``min_{E0} sum_s (E_s - sum_z n_{s,z} E0_z)^2`` (MACE's ``E0s="average"``), the value for
    :attr:`PotentialConfig.e0`. Elements absent from the data get 0; with fewer independent
    compositions than elements the minimum-norm solution is returned.

    >>> from equikit.data.atoms import AtomsBatch
    >>> b = AtomsBatch.from_arrays(positions=torch.zeros(5, 3), numbers=torch.tensor([1, 8, 1, 1, 8]),
    ...                            natoms=torch.tensor([2, 3]), energy=torch.tensor([-3.0, -5.0]))
    >>> [round(e, 6) for e in fit_reference_energies(b, (1, 8))]
    [-2.0, -1.0]
    """
    where = "fit_reference_energies"
    if not isinstance(batch, AtomsBatch):
        raise TypeError(f"{where}: `batch` must be an AtomsBatch, got {type(batch).__name__}")
    if batch.energy is None:
        raise ValueError(f"{where}: `batch` has no energy labels (AtomsBatch.energy is None)")
    zs = list(atomic_numbers)
    unknown = sorted(set(batch.numbers.tolist()) - set(zs))
    if unknown:
        raise ValueError(f"{where}: atomic numbers {unknown} in the data are not in `atomic_numbers` {zs}")
    table = torch.full((119,), -1, dtype=torch.long)
    table[zs] = torch.arange(len(zs))
    counts = torch.zeros(batch.num_graphs, len(zs), dtype=torch.float64)
    counts.index_put_((batch.batch, table[batch.numbers]), torch.ones(len(batch.numbers), dtype=torch.float64),
                      accumulate=True)
    e0 = torch.linalg.pinv(counts) @ batch.energy.to(torch.float64)
    return tuple(float(e) for e in e0)


# --------------------------------------------------------------------------- helpers
def _natural(lmax: int, mul: int) -> Irreps:
    return Irreps("+".join(f"{mul}x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(lmax + 1)))


def mul_ir_to_channels(x: torch.Tensor, irreps: Irreps) -> torch.Tensor:
    """``(N, irreps.dim)`` in e3nn's ``mul x ir`` layout with one multiplicity ``C`` per block ->
    ``(N, C, sum_b d_b)`` (MACE's per-channel layout for the symmetric contraction).

    >>> mul_ir_to_channels(torch.arange(8.0)[None], Irreps("2x0e + 2x1o"))[0].tolist()
    [[0.0, 2.0, 3.0, 4.0], [1.0, 5.0, 6.0, 7.0]]
    """
    c = irreps[0].mul
    blocks = [x[..., sl].reshape(*x.shape[:-1], c, m.ir.dim) for m, sl in zip(irreps, irreps.slices())]
    return torch.cat(blocks, dim=-1)


def _channel_order(irreps: Irreps) -> torch.Tensor:
    """For each position ``(c, i)`` of the channel-major layout ``(C, sum_b d_b)`` (:func:`mul_ir_to_channels`),
    its column in the ``mul x ir`` layout: ``x[..., order]`` is the channel-major form.

    >>> _channel_order(Irreps("2x0e + 2x1o")).tolist()
    [0, 2, 3, 4, 1, 5, 6, 7]
    """
    c = irreps[0].mul
    cols = [torch.arange(sl.start, sl.stop).reshape(c, m.ir.dim) for m, sl in zip(irreps, irreps.slices())]
    return torch.cat(cols, dim=1).reshape(-1)


def _channel_columns(irreps: Irreps) -> torch.Tensor:
    """For each position ``(c, i)`` of the channel-major layout, the column ``block(i) * mul + c`` of a
    per-(block, channel) weight (:func:`_block_columns` in the channel-major order).

    >>> _channel_columns(Irreps("2x0e + 2x1o")).tolist()
    [0, 2, 2, 2, 1, 3, 3, 3]
    """
    return _block_columns(irreps)[_channel_order(irreps)]


def _block_columns(irreps: Irreps) -> torch.Tensor:
    """For each component of the ``mul x ir`` layout, the column ``block * mul + channel`` of a
    per-(block, channel) weight (all blocks have one multiplicity)."""
    c = irreps[0].mul
    cols = [(b * c + torch.arange(c)).repeat_interleave(m.ir.dim) for b, m in enumerate(irreps)]
    return torch.cat(cols)


class PolynomialActivation(nn.Module):
    """``sum_{k=1..degree} a_k t^k / k!`` (with ``a_k = 1`` the truncated ``exp(t) - 1``): a
    polynomial activation, so a sphere grid exact for ``degree`` keeps
    :class:`~equikit.nn.SphereGridMLP` exactly equivariant. ``coefficients`` (optional, ``(...,
    degree)``, broadcast against ``t (...)`` after dropping their last dim): the ``a_k``, e.g. per
    element and hidden unit.

    >>> PolynomialActivation(2)(torch.tensor([2.0]))
    tensor([4.])
    >>> PolynomialActivation(2)(torch.tensor([2.0]), torch.tensor([1.0, 0.5]))
    tensor([3.])
    """

    def __init__(self, degree: int) -> None:
        super().__init__()
        self.degree = degree

    def forward(self, t: torch.Tensor, coefficients: torch.Tensor | None = None) -> torch.Tensor:
        if coefficients is None:
            out, term = t, t
            for k in range(2, self.degree + 1):
                term = term * t / k
                out = out + term
            return out
        out, term = t * coefficients[..., 0], t
        for k in range(2, self.degree + 1):
            term = term * t / k
            out = out + term * coefficients[..., k - 1]
        return out


#: ``1 / sqrt(E[silu(z)^2])`` for ``z ~ N(0, 1)`` (by quadrature): the factor that gives SiLU unit second
#: moment (e3nn's ``normalize2mom(silu)``, used by MACE's radial MLP)
SILU_2MOM = 1.6765324703310909


class _FanInScale(nn.Module):
    """``W = W_raw * scale`` (a ``torch.nn.utils.parametrize`` parametrisation; ``right_inverse``
    sets ``W_raw`` from a given ``W``)."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        return raw * self.scale

    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        return weight / self.scale


def scale_by_fan_in(layer: nn.Linear) -> nn.Linear:
    """Re-parametrise ``layer.weight`` as ``W_raw / sqrt(in_features)`` with ``W_raw = W sqrt(in_features)``
    (in place; the function and the current values are unchanged): Adam's steps act on ``W_raw``, so
    ``W`` moves ``sqrt(in_features)`` times less per step (``PotentialConfig.grid_param="fan_in"``).
    The parameter is ``layer.parametrizations.weight.original``.

    >>> lin = torch.nn.Linear(16, 2)
    >>> w = lin.weight.detach().clone()
    >>> _ = scale_by_fan_in(lin)
    >>> torch.allclose(lin.weight, w), torch.allclose(lin.parametrizations.weight.original, 4 * w)
    (True, True)
    """
    from torch.nn.utils import parametrize

    if not isinstance(layer, nn.Linear):
        raise TypeError(f"scale_by_fan_in: `layer` must be a torch.nn.Linear, got {type(layer).__name__}")
    parametrize.register_parametrization(layer, "weight", _FanInScale(1.0 / math.sqrt(layer.in_features)))
    return layer


class ScaledLinear(nn.Module):
    """Linear map without bias in e3nn's parametrisation: ``y = x @ (scale W_raw).T``, ``W_raw ~ N(0, 1)``
    of shape ``(out_features, in_features)``, ``scale = 1 / sqrt(in_features)`` by default. ``weight``
    is the effective ``(out, in)`` matrix. With Adam the steps act on ``W_raw``, so the effective
    weights move ``1 / scale`` times less per step than an ``nn.Linear``'s.

    >>> lin = ScaledLinear(4, 2)
    >>> x = torch.randn(3, 4)
    >>> torch.allclose(lin(x), x @ lin.raw.T / 2)
    True
    """

    def __init__(self, in_features: int, out_features: int, scale: float | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.scale = 1.0 / math.sqrt(in_features) if scale is None else float(scale)
        self.raw = nn.Parameter(torch.randn(out_features, in_features))

    @property
    def weight(self) -> torch.Tensor:
        return self.raw * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.T

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, scale={self.scale:.4g}"


def _radial_mlp(sizes: list[int], param: str = "torch") -> nn.Sequential:
    """SiLU MLP without biases: it maps 0 to 0, so weights computed from the enveloped basis vanish
    (with two derivatives) at the cutoff and the energy stays C2 when an atom crosses it (MACE's
    radial MLP has no biases for the same reason; with biases the energy jumps at the cutoff).
    ``param``: ``"torch"`` (``nn.Linear``) or ``"e3nn"`` (:class:`ScaledLinear`, and the SiLU's
    unit-second-moment factor :data:`SILU_2MOM` folded into the next layer's scale: the same function as
    MACE's ``FullyConnectedNet`` at no extra cost).

    >>> _radial_mlp([4, 8, 2])(torch.zeros(3, 4)).abs().max().item()
    0.0
    >>> _radial_mlp([4, 8, 2], "e3nn")[2].scale == SILU_2MOM / math.sqrt(8)
    True
    """
    layers: list[nn.Module] = []
    for k in range(len(sizes) - 1):
        if param == "e3nn":
            scale = (SILU_2MOM if k else 1.0) / math.sqrt(sizes[k])
            layers.append(ScaledLinear(sizes[k], sizes[k + 1], scale))
        else:
            layers.append(nn.Linear(sizes[k], sizes[k + 1], bias=False))
        if k < len(sizes) - 2:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class RadialWeights(nn.Module):
    """Per-edge weights of the edge convolution from the edge length: Bessel basis x
    polynomial envelope -> SiLU MLP, or a cubic spline with the envelope.
    Shapes: ``r (E,)`` -> ``(E, num_outputs)``; with ``columns`` (int ``(K,)``) only those output
    columns, ``(E, K)``, equal to ``forward(r)[:, columns]``: the columns are taken from the last
    linear map (the spline coefficients, the MLP's last weight), never gathered from the
    ``(E, num_outputs)`` output (a column gather and its scatter backward on ``E`` rows cost more
    than the extra multiply-adds).

    >>> cfg = PotentialConfig(radial="spline")
    >>> f = RadialWeights(cfg, 6).double()
    >>> r, cols = torch.tensor([1.0, 2.5], dtype=torch.float64), torch.tensor([5, 0, 0])
    >>> torch.allclose(f(r, cols), f(r)[:, cols])
    True
    """

    def __init__(self, cfg: PotentialConfig, num_outputs: int) -> None:
        super().__init__()
        self.kind = cfg.radial
        if cfg.radial == "bessel":
            self.basis = BesselBasis(cfg.cutoff, cfg.num_radial)
            self.envelope = PolynomialCutoff(cfg.cutoff, cfg.envelope_p)
            self.mlp = _radial_mlp([cfg.num_radial, *cfg.radial_mlp, num_outputs], cfg.radial_param)
        else:
            self.spline = SplineRadial(cfg.cutoff, num_outputs, cfg.spline_intervals)

    def embedding(self, r: torch.Tensor) -> torch.Tensor:
        """``(E, k0)``: the parameter-free part, the Bessel basis times the envelope (or the
        enveloped spline basis). It depends only on ``cutoff``, ``num_radial`` / ``spline_intervals``
        and ``envelope_p``, so every layer of a model has the same one: :class:`Potential` computes
        it once per call and passes it to each layer (``embedding=``)."""
        if self.kind == "bessel":
            return self.basis(r) * self.envelope(r)[..., None]
        return self.spline.basis(r)

    def features(self, r: torch.Tensor, embedding: torch.Tensor | None = None) -> torch.Tensor:
        """``(E, k)``: the input of the last linear map (the enveloped spline basis, or the MLP's
        last hidden layer); ``forward(r, cols) == features(r) @ head(cols)``. ``embedding``:
        :meth:`embedding` of ``r`` when already computed."""
        e = self.embedding(r) if embedding is None else embedding
        return self.mlp[:-1](e) if self.kind == "bessel" else e

    def head(self, columns: torch.Tensor | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``(k, K)``: the last linear map, only its output ``columns`` (all when None)."""
        c = self.mlp[-1].weight.T if self.kind == "bessel" else self.spline.coefficients
        c = c if dtype is None else c.to(dtype)
        return c if columns is None else c.index_select(1, columns)

    def forward(self, r: torch.Tensor, columns: torch.Tensor | None = None,
                embedding: torch.Tensor | None = None) -> torch.Tensor:
        if self.kind == "bessel" and columns is None:
            return self.mlp(self.embedding(r) if embedding is None else embedding)
        return self.features(r, embedding) @ self.head(columns, r.dtype)


class Interaction(nn.Module):
    """One MACE layer: linear up, channelwise TP with ``Y`` and radial weights, scatter to the
    centres / ``avg_num_neighbors``, linear, symmetric contraction, linear + linear skip."""

    def __init__(self, cfg: PotentialConfig, irreps_in: Irreps, irreps_out: Irreps, skip: bool) -> None:
        super().__init__()
        c = irreps_in[0].mul
        self.irreps_in, self.irreps_out = irreps_in, irreps_out
        self.avg = float(cfg.avg_num_neighbors)
        self.irreps_a = _natural(cfg.max_ell, c)
        self.linear_up = Linear(irreps_in, irreps_in)
        product = cfg.tp_product
        if product == "auto":
            product = "gaunt" if cfg.tp_backend in _GAUNT_BACKENDS else "clebsch_gordan"
        self.gaunt = product == "gaunt"
        sh = _natural(cfg.max_ell, 1)
        self.fused = self.edge_matrix = False
        self.conv = None
        if self.gaunt:  # unweighted product; per-(channel, l) radial scalings before and after
            desc = gaunt_product(irreps_in, sh, lmax=cfg.max_ell, mode="uvu")
            # the radial columns that scale each input / output column (l1 / l_out block of a channel)
            cols_in, cols_out = _block_columns(irreps_in), _block_columns(desc.irreps_out)
            self.num_scale_in = c * len(irreps_in)
            num_weights = self.num_scale_in + c * len(desc.irreps_out)
            edge = cfg.gaunt_edge if cfg.gaunt_edge != "auto" else \
                ("matrix" if cfg.tp_backend == "sparse_cg" else "fused")
            if cfg.tp_backend not in _GAUNT_BACKENDS and edge == "matrix":
                # per edge the channel-free T = Y @ G' (Gaunt tensor), then (C, d_in) @ (d_in, d_out) per edge,
                # summed at the centres in one kernel (tp.GauntEdgeMatrix), in the channel-major layout: the
                # features are permuted on the N nodes (before the gather, after the sum), never on the E
                # edges; the radial scalings' columns are laid out channel-major too (no gathers)
                self.edge = GauntEdgeMatrix(Irreps([(1, m.ir) for m in irreps_in]), sh, cfg.max_ell)
                # w_in per input component (an elementwise factor of the gathered features), w_out per
                # output degree (the kernel applies it): channel-major columns (c, component) / (c, degree)
                cols_in = _channel_columns(irreps_in)
                nb = len(desc.irreps_out)
                cols_out = (torch.arange(nb)[None, :] * c + torch.arange(c)[:, None]).reshape(-1)
                order_in, order_out = _channel_order(irreps_in), _channel_order(desc.irreps_out)
                identity = bool(torch.equal(order_in, torch.arange(len(order_in))))
                self.register_buffer("to_channels", None if identity else order_in, persistent=False)
                self.register_buffer("from_channels", torch.argsort(order_out), persistent=False)
                self.edge_matrix = True
            elif cfg.tp_backend not in _GAUNT_BACKENDS:
                # the same product as a weighted channelwise one with Gaunt coefficients (no path
                # normalisation: equal to gaunt_product), path weight w_in[l1] * w_out[l_out] per channel:
                # the scalings go into the kernel's weights instead of two passes over the messages
                fused = channelwise(irreps_in, sh, desc.irreps_out, coefficients="gaunt", path_normalization="none")
                cols_in = torch.cat([p.i1 * c + torch.arange(c) for p in fused.paths])
                cols_out = torch.cat([p.i_out * c + torch.arange(c) for p in fused.paths])
                desc, self.fused = fused, True
            # radial output columns: w_in = R[:, cols_in], w_out = R[:, num_scale_in + cols_out]
            self.register_buffer("cols_in", cols_in, persistent=False)
            self.register_buffer("cols_out", self.num_scale_in + cols_out, persistent=False)
        else:
            desc = channelwise(irreps_in, sh, self.irreps_a)
            num_weights = desc.weight_numel
        if not self.edge_matrix:
            self.conv = TensorProduct(desc, backend=cfg.tp_backend, internal_weights=False)
        self.radial = RadialWeights(cfg, num_weights)
        self.irreps_conv = desc.irreps_out
        self.linear_a = Linear(self.irreps_conv, self.irreps_a)
        self.grid = cfg.product == "grid_mlp"
        self.grid_condition = cfg.grid_condition if self.grid else "none"
        if self.grid:
            hidden = cfg.grid_hidden if isinstance(cfg.grid_hidden, tuple) else (cfg.grid_hidden,)
            per_element = cfg.grid_output == "element"
            self.product = SphereGridMLP(self.irreps_a, irreps_out, hidden=hidden,
                                         act=PolynomialActivation(cfg.correlation),
                                         exact_degree=cfg.correlation ** len(hidden),
                                         output="degree" if per_element else "grid",
                                         num_groups=len(cfg.atomic_numbers) if per_element else 1,
                                         input_scale=float(cfg.grid_gain), output_scale=1.0 / cfg.grid_gain)
            product_irreps = irreps_out
            if self.grid_condition == "element":  # zero init: starts as the unconditioned MLP
                self.grid_bias = nn.Parameter(torch.zeros(len(cfg.atomic_numbers), hidden[0]))
            elif self.grid_condition == "scalars":
                self.grid_bias = nn.Linear(c, hidden[0], bias=False)
            if cfg.grid_param == "fan_in":
                cond = getattr(self, "grid_bias", None)
                for lin in [*self.product.layers, *([cond] if isinstance(cond, nn.Linear) else [])]:
                    scale_by_fan_in(lin)
            self.grid_powers = None
            if cfg.grid_powers == "element":  # init 1: starts as the fixed truncated exponential
                self.grid_powers = nn.Parameter(torch.ones(len(cfg.atomic_numbers), hidden[0], cfg.correlation))
        else:
            self.product = SymmetricContraction(_natural(cfg.max_ell, 1), Irreps([(1, m.ir) for m in irreps_out]),
                                                cfg.correlation, len(cfg.atomic_numbers), c,
                                                backend=cfg.symmetric_backend)
            product_irreps = self.product.irreps_out_full
        self.linear_out = Linear(product_irreps, irreps_out)
        self.skip = Linear(irreps_in, irreps_out) if skip else None

    def forward(self, h, element, sh, r, edge_index, radial_embedding=None):
        """``radial_embedding``: ``self.radial.embedding(r)`` when the caller already has it (the
        same for every layer; :meth:`Potential.node_energies` computes it once)."""
        src, dst = edge_index[0], edge_index[1]
        if self.edge_matrix:
            m = self._edge_matrix_messages(h, sh, r, src, dst, radial_embedding)
        else:
            m = self._messages(h, sh, r, src, dst, radial_embedding)
        if self.grid:
            cond = None
            if self.grid_condition == "element":
                cond = self.grid_bias[element]
            elif self.grid_condition == "scalars":  # irreps_in starts with C x 0e
                cond = self.grid_bias(h[:, : self.grid_bias.in_features])
            act = None
            if self.grid_powers is not None:  # per-atom coefficients, the same at every grid point
                coef = self.grid_powers[element].unsqueeze(1)  # (N, 1, H, correlation)
                act = functools.partial(self.product.act, coefficients=coef)
            # linear_a and the 1 / avg_num_neighbors scale are folded into the grid MLP's first layer
            b = self.product(m, cond, act, group=element, pre=self.linear_a, pre_scale=1.0 / self.avg)
        else:
            b = self.product(mul_ir_to_channels(self.linear_a(m / self.avg), self.irreps_a), element)
        out = self.linear_out(b)
        return out + self.skip(h) if self.skip is not None else out

    def _messages(self, h, sh, r, src, dst, radial_embedding):
        """The messages summed at the centres, ``(N, irreps_conv.dim)``, by the ``tp_backend`` executor."""
        x = torch.index_select(self.linear_up(h), 0, src)
        if self.gaunt:
            # the per-(l1, channel) and per-(l_out, channel) scalings as columns of the radial map
            # (RadialWeights.head), one (E, k) feature matrix times two column-selected heads
            f = self.radial.features(r, radial_embedding)
            w_in, w_out = f @ self.radial.head(self.cols_in, r.dtype), f @ self.radial.head(self.cols_out, r.dtype)
            msg = self.conv(x, sh, w_in * w_out) if self.fused else self.conv(x * w_in, sh) * w_out
        else:
            msg = self.conv(x, sh, self.radial(r, embedding=radial_embedding))
        return torch.zeros(h.shape[0], msg.shape[-1], dtype=msg.dtype, device=msg.device).index_add_(0, dst, msg)

    def _edge_matrix_messages(self, h, sh, r, src, dst, radial_embedding):
        """The Gaunt messages summed at the centres, ``(N, irreps_conv.dim)``, by per-edge matrices
        (``gaunt_edge="matrix"``): the same values as :meth:`_messages` with the fused product."""
        f = self.radial.features(r, radial_embedding)
        w_in, w_out = f @ self.radial.head(self.cols_in, r.dtype), f @ self.radial.head(self.cols_out, r.dtype)
        x = self.linear_up(h)
        if self.to_channels is not None:
            x = x.index_select(1, self.to_channels)  # (N, C d_in), channel-major
        x = x.index_select(0, src) * w_in
        e, c = x.shape[0], self.irreps_in[0].mul
        d_in, nb = self.edge.irreps_in.dim, len(self.edge.irreps_out)  # explicit: E may be 0 (no neighbours)
        m = self.edge(x.reshape(e, c, d_in), sh, w_out.reshape(e, c, nb), dst, h.shape[0])  # (N, C, d_out)
        return m.reshape(h.shape[0], -1).index_select(1, self.from_channels)


# --------------------------------------------------------------------------- the model
class Potential(nn.Module):
    """MACE-style potential: energy, forces ``-dE/dpos`` and stress ``(1/V) dE/d(strain)``.

    ``forward(batch, compute_forces=True, compute_stress=False, training=False, neighbors=None)``
    returns a dict with ``energy (B,)``, ``node_energy (N,)`` and, when asked, ``forces (N, 3)`` and
    ``stress (B, 3, 3)`` (eV/A^3, ASE's sign: positive under tension). ``training=True``
    keeps the graph of the derivatives (``create_graph``) so force and stress losses train.
    ``neighbors``: a precomputed :class:`~equikit.data.neighbors.Neighbors` of ``batch`` (its
    ``edge_index`` and ``shifts``, e.g. ``batch.neighbors(cutoff)`` kept across training epochs or a
    Verlet list filtered to the cutoff); every edge must be shorter than ``config.cutoff``
    (longer ones would count); ``None`` searches the neighbours on every call. ``node_energies``:
    a callable that replaces :meth:`node_energies` (same arguments and result), e.g.
    ``torch.compile(model.node_energies)``: the derivatives are taken outside it, so a compiled
    energy gives compiled forces and stress (:class:`~equikit.models.calculator.EquikitCalculator`
    ``compile=True``).

    >>> import torch
    >>> from equikit.data.atoms import AtomsBatch
    >>> cfg = PotentialConfig(atomic_numbers=(1, 8), hidden_irreps="4x0e + 4x1o", max_ell=1, correlation=2,
    ...                       radial_mlp=(8,), num_interactions=2)
    >>> model = Potential(cfg)
    >>> b = AtomsBatch.from_arrays(positions=torch.tensor([[0.0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]),
    ...                            numbers=torch.tensor([8, 1, 1]), natoms=torch.tensor([3]), dtype=torch.float64)
    >>> out = model(b)
    >>> out["energy"].shape, out["forces"].shape
    (torch.Size([1]), torch.Size([3, 3]))
    """

    def __init__(self, config: PotentialConfig) -> None:
        super().__init__()
        if not isinstance(config, PotentialConfig):
            raise TypeError(f"Potential: `config` must be a PotentialConfig, got {type(config).__name__}")
        config.validate()
        self.config = config
        dtype = _DTYPES[config.dtype]
        hidden = Irreps(config.hidden_irreps)
        c = hidden[0].mul
        n_el = len(config.atomic_numbers)
        table = torch.full((119,), -1, dtype=torch.long)
        table[list(config.atomic_numbers)] = torch.arange(n_el)
        self.register_buffer("z_to_index", table, persistent=False)
        e0 = config.e0 if config.e0 is not None else (0.0,) * n_el
        self.register_buffer("e0", torch.tensor(e0, dtype=dtype))
        self.embedding = nn.Parameter(torch.randn(n_el, c, dtype=dtype))
        self.sh_irreps = _natural(config.max_ell, 1)
        scalars = Irreps(f"{c}x0e")
        layers, readouts, irreps = [], [], scalars
        for t in range(config.num_interactions):
            last = t == config.num_interactions - 1
            out = scalars if last else hidden
            layers.append(Interaction(config, irreps, out, skip=t > 0))
            readouts.append(make_mlp([c, config.readout_hidden, 1]) if last else Linear(out, "1x0e"))
            irreps = out
        self.interactions = nn.ModuleList(layers)
        self.readouts = nn.ModuleList(readouts)
        self.to(dtype)

    def element_index(self, numbers: torch.Tensor) -> torch.Tensor:
        """Atomic numbers ``(N,)`` -> indices into ``config.atomic_numbers``; ValueError for unknown ones."""
        return element_indices(self.z_to_index, numbers, self.config.atomic_numbers, "Potential")

    def edge_features(self, vec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Edge lengths ``(E,)`` and spherical harmonics ``(E, (max_ell + 1)^2)`` of the edge vectors."""
        r = torch.linalg.vector_norm(vec, dim=-1)
        return r, spherical_harmonics(self.sh_irreps, vec, normalize=True, normalization="component")

    def node_energies(self, pos, cell, batch, numbers, pbc, edge_index=None, shifts=None):
        """Atomic energies ``(N,)`` from positions and cells (differentiable in both); the
        neighbour list is searched without gradients when not given."""
        element = self.element_index(numbers)
        if edge_index is None:
            nb = radius_graph(pos.detach(), self.config.cutoff, batch=batch, cell=cell.detach(), pbc=pbc)
            edge_index, shifts = nb.edge_index, nb.shifts
        r, sh = self.edge_features(edge_vectors(pos, edge_index, shifts, cell, batch))
        h = self.embedding[element].to(pos.dtype)
        energy = self.e0.to(pos.dtype)[element]
        emb = self.interactions[0].radial.embedding(r)  # parameter-free, equal in every layer: computed once
        for layer, readout in zip(self.interactions, self.readouts):
            h = layer(h, element, sh, r, edge_index, radial_embedding=emb)
            energy = energy + readout(h).squeeze(-1)
        return energy

    def forward(self, batch: AtomsBatch, compute_forces: bool = True, compute_stress: bool = False,
                training: bool = False, neighbors=None, node_energies=None) -> dict[str, torch.Tensor]:
        if not isinstance(batch, AtomsBatch):
            raise TypeError(f"Potential.forward: `batch` must be an AtomsBatch, got {type(batch).__name__}")
        dtype = self.e0.dtype
        if batch.positions.dtype != dtype:
            raise TypeError(f"Potential.forward: positions are {batch.positions.dtype} but the model is {dtype}; "
                            f"use batch.to(dtype={dtype})")
        if compute_stress and not bool(batch.pbc.all()):
            raise ValueError("Potential.forward: compute_stress=True needs periodic cells (pbc all True) "
                             f"in every structure, got pbc {batch.pbc.tolist()}")
        if neighbors is not None and not (isinstance(getattr(neighbors, "edge_index", None), torch.Tensor)
                                          and isinstance(getattr(neighbors, "shifts", None), torch.Tensor)):
            raise TypeError("Potential.forward: `neighbors` must be a Neighbors (edge_index, shifts) of the batch, "
                            f"e.g. batch.neighbors(cutoff), or None; got {type(neighbors).__name__}")
        # derivatives need a graph even under torch.no_grad() (inference, MD)
        with torch.enable_grad() if compute_forces or compute_stress else contextlib.nullcontext():
            return self._forward(batch, compute_forces, compute_stress, training, neighbors, node_energies)

    def _forward(self, batch: AtomsBatch, compute_forces: bool, compute_stress: bool,
                 training: bool, neighbors=None, node_energies=None) -> dict[str, torch.Tensor]:
        dtype, n_struct = self.e0.dtype, batch.num_graphs
        pos, cell = batch.positions, batch.cell
        inputs = []
        if compute_forces or compute_stress:
            if not pos.requires_grad:  # positions that already carry a graph keep it (gradcheck)
                pos = pos.detach().requires_grad_(True)
            inputs.append(pos)
        if compute_stress:
            eps = torch.zeros(n_struct, 3, 3, dtype=dtype, device=pos.device, requires_grad=True)
            sym = 0.5 * (eps + eps.transpose(1, 2))
            pos = pos + torch.einsum("nj,njk->nk", pos, sym[batch.batch])
            cell = cell + cell @ sym
            inputs.append(eps)
        edge_index, shifts = (None, None) if neighbors is None else (neighbors.edge_index, neighbors.shifts)
        node_e = (node_energies or self.node_energies)(pos, cell, batch.batch, batch.numbers, batch.pbc,
                                                       edge_index, shifts)
        energy = torch.zeros(n_struct, dtype=dtype, device=pos.device).index_add_(0, batch.batch, node_e)
        out = {"energy": energy, "node_energy": node_e}
        if inputs:
            grads = torch.autograd.grad(energy.sum(), inputs, create_graph=training, allow_unused=True)
            if compute_forces:
                g = grads[0]
                out["forces"] = -g if g is not None else torch.zeros_like(batch.positions)
            if compute_stress:
                g = grads[-1]
                g = g if g is not None else torch.zeros(n_struct, 3, 3, dtype=dtype, device=pos.device)
                vol = torch.linalg.det(batch.cell).abs()
                out["stress"] = g / vol[:, None, None]
        return out

    def count_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


__all__ = ["Interaction", "Potential", "PotentialConfig", "RadialWeights", "ScaledLinear", "average_num_neighbors",
           "fit_reference_energies", "mul_ir_to_channels", "scale_by_fan_in"]
