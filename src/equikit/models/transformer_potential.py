r"""A non-equivariant transformer interatomic potential (atoms as tokens), the backbone of the
learned-equivariance benchmark (TransIP, Elhag et al., "Learning Inter-Atomic Potentials without
Explicit Equivariance").

Each atom is a token: ``h^0_i = W_z[z_i] + W_x phi(x_i - c)`` with ``c`` the centroid of its
structure and ``phi(x) = [x, sin(x B), cos(x B)]`` a Fourier embedding of the raw Cartesian
coordinates (``B`` fixed random frequencies). Then ``L`` pre-norm transformer blocks

.. math::
    h \leftarrow h + \mathrm{MHA}(\mathrm{LN}(h)), \qquad h \leftarrow h + \mathrm{MLP}(\mathrm{LN}(h))

with a key-padding mask so molecules of different sizes share one padded batch, and an atomic
energy ``E_i = E0[z_i] + \mathrm{MLP}(\mathrm{LN}(h_i))`` summed per structure; forces
``F = -dE/dx`` by autograd (``training=True`` keeps the graph for force losses: double backward).

Symmetries by construction: no token index enters, so ``E`` is invariant and ``F`` equivariant
under atom permutations, and centring makes both translation invariant. Rotations and
reflections are **not** built in: the model sees raw coordinates and must learn them (from
augmentation, or from the latent alignment of :class:`~equikit.symmetrize.LatentAlignmentLoss`
on its tokens, see :meth:`TransformerPotential.encode`). See ``docs/potentials.md``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from equikit.data.atoms import AtomsBatch
from equikit.models.potential import check_elements, element_indices
from equikit.nn import BesselBasis, PolynomialCutoff
from equikit.nn._mlp import make_mlp

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_PAIR_FEATURES = ("displacement", "distance", "both")


def _positive_int(value, name: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where}: `{name}` must be a positive int, got {value!r}")
    return value


@dataclass
class TransformerPotentialConfig:
    """Configuration of :class:`TransformerPotential`.

    Fields:
        atomic_numbers: the elements the model knows, e.g. ``(1, 6, 8)``.
        e0: per-element reference energies (eV), same order; default zeros.
        dim: token width ``D``.
        heads: attention heads (must divide ``dim``).
        layers: transformer blocks.
        ff_mult: hidden width of each block's MLP is ``ff_mult * dim``.
        num_frequencies: Fourier frequencies ``F`` of the position embedding (0: linear only).
        frequency_scale: standard deviation of the frequencies (1/Angstrom).
        readout_hidden: hidden width of the atomic-energy MLP.
        pair_bias: add to every block's attention logits a per-head bias ``MLP(pair features)``;
            translation invariant, and (with ``pair_features="displacement"`` or ``"both"``) not
            rotation invariant.
        pair_features: what the pair-bias MLP sees: ``"displacement"``: ``phi(x_j - x_i)``, the same
            Fourier embedding of the raw displacement vectors as the atoms' positions;
            ``"distance"``: a Bessel radial basis of ``r_ij = |x_j - x_i|`` times a smooth polynomial
            envelope that vanishes at ``cutoff`` (rotation invariant: rotations still enter through
            the tokens' raw positions, so the model is not rotation invariant); ``"both"``: the two
            concatenated.
        pair_values: also add pair embeddings to the attention values, ``a_i = sum_j alpha_ij (v_j +
            e_ij)`` with ``e_ij = MLP(pair features)`` (relative-position values, Shaw et al. 2018), so
            the pair geometry reaches the tokens directly and not only through the attention weights.
            Needs ``pair_bias``.
        cutoff: radius (Angstrom) of the radial envelope; pairs farther apart get a zero radial feature.
        num_radial: Bessel functions of the radial basis.
        energy_scale: atomic energies are ``E0[z] + energy_scale * MLP(h)`` (MACE's scale; set it to
            the RMS of the force components of the training data, so the untrained model's forces
            are of the size of the labels).
        seed: seed of the fixed Fourier frequencies.
        dtype: ``"float32"`` or ``"float64"``.

    Example:
        >>> TransformerPotentialConfig(atomic_numbers=(1, 8), dim=32, heads=4).dim
        32
    """

    atomic_numbers: tuple[int, ...] = (1, 6, 8)
    e0: tuple[float, ...] | None = None
    dim: int = 64
    heads: int = 4
    layers: int = 3
    ff_mult: int = 2
    num_frequencies: int = 16
    frequency_scale: float = 1.0
    readout_hidden: int = 64
    pair_bias: bool = False
    pair_features: str = "displacement"
    pair_values: bool = False
    cutoff: float = 5.0
    num_radial: int = 8
    energy_scale: float = 1.0
    seed: int = 0
    dtype: str = "float64"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` / ``TypeError`` naming the field for any inconsistent value."""
        w = "TransformerPotentialConfig"
        self.atomic_numbers, self.e0 = check_elements(self.atomic_numbers, self.e0, w)
        for name in ("dim", "heads", "layers", "ff_mult", "readout_hidden", "num_radial"):
            _positive_int(getattr(self, name), name, w)
        if self.dim % self.heads:
            raise ValueError(f"{w}: `heads` ({self.heads}) must divide `dim` ({self.dim}); e.g. dim=64, heads=4")
        if isinstance(self.num_frequencies, bool) or not isinstance(self.num_frequencies, int) \
                or self.num_frequencies < 0:
            raise ValueError(f"{w}: `num_frequencies` must be an int >= 0, got {self.num_frequencies!r}")
        if not isinstance(self.frequency_scale, (int, float)) or not self.frequency_scale > 0:
            raise ValueError(f"{w}: `frequency_scale` must be > 0, got {self.frequency_scale!r}")
        if not isinstance(self.pair_bias, bool):
            raise TypeError(f"{w}: `pair_bias` must be a bool, got {self.pair_bias!r}")
        if self.pair_features not in _PAIR_FEATURES:
            raise ValueError(f"{w}: `pair_features` must be one of {list(_PAIR_FEATURES)}, got {self.pair_features!r}")
        if not isinstance(self.pair_values, bool):
            raise TypeError(f"{w}: `pair_values` must be a bool, got {self.pair_values!r}")
        if self.pair_values and not self.pair_bias:
            raise ValueError(f"{w}: `pair_values=True` needs `pair_bias=True` (the pair features are built there)")
        for name in ("cutoff", "energy_scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{w}: `{name}` must be a number > 0, got {value!r}")
        if self.dtype not in _DTYPES:
            raise ValueError(f"{w}: `dtype` must be one of {sorted(_DTYPES)}, got {self.dtype!r}")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> TransformerPotentialConfig:
        if not isinstance(data, dict):
            raise TypeError(f"TransformerPotentialConfig.from_dict: expected a mapping, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"TransformerPotentialConfig.from_dict: unknown fields {unknown}; known: {sorted(names)}")
        return cls(**data)


# --------------------------------------------------------------------------- pure functions
def pad_atoms(values: torch.Tensor, batch: torch.Tensor, num_graphs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scatter per-atom rows ``(N, ...)`` (atoms sorted by structure) into a padded
    ``(B, L, ...)`` tensor (zeros where padded; differentiable) and the mask ``(B, L)`` of real atoms.

    >>> v, m = pad_atoms(torch.arange(5.0)[:, None], torch.tensor([0, 0, 0, 1, 1]), 2)
    >>> v[..., 0].tolist(), m.tolist()
    ([[0.0, 1.0, 2.0], [3.0, 4.0, 0.0]], [[True, True, True], [True, True, False]])
    """
    counts = torch.bincount(batch, minlength=num_graphs)
    length = int(counts.max()) if len(batch) else 0
    start = torch.cumsum(counts, 0) - counts
    slot = batch * length + torch.arange(len(batch), device=batch.device) - start[batch]
    flat = values.new_zeros(num_graphs * length, *values.shape[1:]).index_copy(0, slot, values)
    mask = torch.zeros(num_graphs * length, dtype=torch.bool, device=batch.device).index_fill(0, slot, True)
    return flat.reshape(num_graphs, length, *values.shape[1:]), mask.reshape(num_graphs, length)


def centre_positions(pos: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Subtract each structure's centroid from its real atoms: ``pos (B, L, 3)``, ``mask (B, L)``;
    padded rows stay zero.

    >>> pos = torch.tensor([[[1.0, 0, 0], [3.0, 0, 0], [0.0, 0, 0]]])
    >>> centre_positions(pos, torch.tensor([[True, True, False]]))[0, :, 0].tolist()
    [-1.0, 1.0, 0.0]
    """
    w = mask.to(pos.dtype).unsqueeze(-1)
    c = (pos * w).sum(-2, keepdim=True) / w.sum(-2, keepdim=True).clamp_min(1)
    return torch.where(mask.unsqueeze(-1), pos - c, torch.zeros_like(pos))


def fourier_features(pos: torch.Tensor, frequencies: torch.Tensor) -> torch.Tensor:
    """``[x, sin(x B), cos(x B)]`` for ``pos (..., 3)`` and ``frequencies B (3, F)`` -> ``(..., 3 + 2F)``.

    >>> fourier_features(torch.zeros(2, 3), torch.ones(3, 4)).shape
    torch.Size([2, 11])
    """
    if frequencies.shape[-1] == 0:
        return pos
    proj = pos @ frequencies.to(pos.dtype)
    return torch.cat([pos, torch.sin(proj), torch.cos(proj)], dim=-1)


def pair_distances(x: torch.Tensor) -> torch.Tensor:
    """All pair distances ``r_ij = |x_j - x_i|`` ``(B, L, L)`` of ``x (B, L, 3)``, differentiable twice
    everywhere (zero, with zero gradient, where ``x_j = x_i``, e.g. on the diagonal).

    >>> pair_distances(torch.tensor([[[0.0, 0, 0], [3.0, 4.0, 0]]]))[0].tolist()
    [[0.0, 5.0], [5.0, 0.0]]
    """
    r2 = (x[:, None, :, :] - x[:, :, None, :]).pow(2).sum(-1)
    tiny = r2 <= torch.finfo(x.dtype).tiny
    return torch.where(tiny, torch.zeros_like(r2), torch.where(tiny, torch.ones_like(r2), r2).sqrt())


def masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                     bias: torch.Tensor | None = None) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d) + bias) v`` over real keys only, ``q, k, v (B, H, L, d)``,
    ``mask (B, L)``, optional logit ``bias (B, H, L, L)``; torch's ``scaled_dot_product_attention``
    with its math kernel where gradients are on (the fused CPU kernel has no double backward, which
    force training needs).

    >>> q = torch.randn(1, 1, 3, 2)
    >>> out = masked_attention(q, q, torch.eye(3)[None, None, :, :2], torch.tensor([[True, True, False]]))
    >>> out.shape
    torch.Size([1, 1, 3, 2])
    """
    attn_mask = mask[:, None, None, :]
    if bias is not None:
        attn_mask = bias.masked_fill(~attn_mask, float("-inf"))
    ctx = sdpa_kernel(SDPBackend.MATH) if torch.is_grad_enabled() else contextlib.nullcontext()
    with ctx:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)


def masked_attention_with_pair_values(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                                      bias: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``sum_j alpha_ij (v_j + e_ij)`` with ``alpha = softmax(q k^T / sqrt(d) + bias)`` over real keys:
    ``q, k, v (B, H, L, d)``, ``mask (B, L)``, ``bias (B, H, L, L)``, pair ``values e (B, H, L, L, d)``;
    written out (no fused kernel returns ``alpha``). With ``e = 0`` it equals :func:`masked_attention`.

    >>> q = torch.randn(1, 2, 3, 4, dtype=torch.float64)
    >>> m, b = torch.tensor([[True, True, False]]), torch.zeros(1, 2, 3, 3, dtype=torch.float64)
    >>> e = torch.zeros(1, 2, 3, 3, 4, dtype=torch.float64)
    >>> torch.allclose(masked_attention_with_pair_values(q, q, q, m, b, e), masked_attention(q, q, q, m, b))
    True
    """
    logits = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5 + bias
    alpha = torch.softmax(logits.masked_fill(~mask[:, None, None, :], float("-inf")), dim=-1)
    return alpha @ v + (alpha.unsqueeze(-1) * values).sum(-2)


# --------------------------------------------------------------------------- modules
class AttentionBlock(nn.Module):
    """Pre-norm transformer block on masked token sets ``(B, L, D)`` (no positional index, so it
    commutes with any permutation of the tokens).

    >>> blk = AttentionBlock(8, 2, 2)
    >>> blk(torch.randn(2, 3, 8), torch.ones(2, 3, dtype=torch.bool)).shape
    torch.Size([2, 3, 8])
    """

    def __init__(self, dim: int, heads: int, ff_mult: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.mlp = make_mlp([dim, ff_mult * dim, dim])

    def forward(self, h: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor | None = None,
                pair_values: torch.Tensor | None = None) -> torch.Tensor:
        """``h (B, L, D)``, ``mask (B, L)``, optional logit ``bias (B, H, L, L)`` and ``pair_values
        (B, H, L, L, D / H)`` (added to the values, see :func:`masked_attention_with_pair_values`)."""
        b, n, d = h.shape
        q, k, v = self.qkv(self.norm1(h)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if pair_values is None:
            a = masked_attention(q, k, v, mask, bias)
        else:
            a = masked_attention_with_pair_values(q, k, v, mask, bias, pair_values)
        a = a.transpose(1, 2).reshape(b, n, d)
        h = h + self.out(a)
        return h + self.mlp(self.norm2(h))


class TransformerPotential(nn.Module):
    """Transformer potential: energy and forces ``-dE/dpos`` of molecules (no periodic cells).

    ``forward(batch, compute_forces=True, training=False, return_tokens=False)`` returns a dict
    with ``energy (B,)``, ``node_energy (N,)``, ``forces (N, 3)`` when asked and ``tokens (N, D)``
    (the last block's output per atom) when ``return_tokens``; ``training=True`` keeps the graph
    of the forces for force losses. :meth:`encode` is the dense token map used by
    :class:`~equikit.symmetrize.LatentAlignmentLoss`.

    >>> from equikit.data.atoms import AtomsBatch
    >>> cfg = TransformerPotentialConfig(atomic_numbers=(1, 8), dim=16, heads=2, layers=2)
    >>> model = TransformerPotential(cfg)
    >>> b = AtomsBatch.from_arrays(positions=torch.tensor([[0.0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]),
    ...                            numbers=torch.tensor([8, 1, 1]), natoms=torch.tensor([3]), dtype=torch.float64)
    >>> out = model(b)
    >>> out["energy"].shape, out["forces"].shape
    (torch.Size([1]), torch.Size([3, 3]))
    """

    def __init__(self, config: TransformerPotentialConfig) -> None:
        super().__init__()
        if not isinstance(config, TransformerPotentialConfig):
            raise TypeError(f"TransformerPotential: `config` must be a TransformerPotentialConfig, "
                            f"got {type(config).__name__}")
        config.validate()
        self.config = config
        dtype = _DTYPES[config.dtype]
        n_el = len(config.atomic_numbers)
        table = torch.full((119,), -1, dtype=torch.long)
        table[list(config.atomic_numbers)] = torch.arange(n_el)
        self.register_buffer("z_to_index", table, persistent=False)
        e0 = config.e0 if config.e0 is not None else (0.0,) * n_el
        self.register_buffer("e0", torch.tensor(e0, dtype=dtype))
        gen = torch.Generator().manual_seed(config.seed)
        freqs = torch.randn(3, config.num_frequencies, generator=gen, dtype=torch.float64) * config.frequency_scale
        self.register_buffer("frequencies", freqs.to(dtype))
        self.element = nn.Embedding(n_el, config.dim)
        self.position = nn.Linear(3 + 2 * config.num_frequencies, config.dim)
        self.radial = BesselBasis(config.cutoff, config.num_radial) if config.pair_features != "displacement" else None
        self.envelope = PolynomialCutoff(config.cutoff) if self.radial is not None else None
        pair_in = {"displacement": 3 + 2 * config.num_frequencies, "distance": config.num_radial,
                   "both": 3 + 2 * config.num_frequencies + config.num_radial}[config.pair_features]
        self.pair = make_mlp([pair_in, config.dim, config.heads]) if config.pair_bias else None
        self.pair_value = make_mlp([pair_in, config.dim, config.dim]) if config.pair_values else None
        self.blocks = nn.ModuleList(AttentionBlock(config.dim, config.heads, config.ff_mult)
                                    for _ in range(config.layers))
        self.norm = nn.LayerNorm(config.dim)
        self.readout = make_mlp([config.dim, config.readout_hidden, 1])
        self.to(dtype)

    def element_index(self, numbers: torch.Tensor) -> torch.Tensor:
        """Atomic numbers -> indices into ``config.atomic_numbers``; ValueError for unknown ones."""
        return element_indices(self.z_to_index, numbers, self.config.atomic_numbers, "TransformerPotential")

    def encode(self, pos: torch.Tensor, numbers: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Tokens ``(B, L, D)`` after the last block, from padded ``pos (B, L, 3)``, atomic
        ``numbers (B, L)`` (any value where padded) and ``mask (B, L)`` of real atoms."""
        element = self.element_index(torch.where(mask, numbers, self.config.atomic_numbers[0]))
        x = centre_positions(pos, mask)
        h = self.element(element) + self.position(fourier_features(x, self.frequencies))
        bias = values = None
        if self.pair is not None:  # (B, L, L, F) pair features -> (B, H, L, L) logit biases
            pair = self.pair_features(x)
            bias = self.pair(pair).permute(0, 3, 1, 2)
            if self.pair_value is not None:  # -> (B, H, L, L, D / H) values
                b, n = x.shape[:2]
                values = self.pair_value(pair).reshape(b, n, n, self.config.heads, -1).permute(0, 3, 1, 2, 4)
        for block in self.blocks:
            h = block(h, mask, bias, values)
        return h

    def pair_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pair features ``(B, L, L, F)`` of centred positions ``x (B, L, 3)`` (see ``config.pair_features``)."""
        feats = []
        if self.config.pair_features in ("displacement", "both"):
            feats.append(fourier_features(x[:, None, :, :] - x[:, :, None, :], self.frequencies))
        if self.radial is not None:  # the diagonal (r = 0) gets the r -> 0 limit, kept off the graph:
            r = pair_distances(x)    # sinc's double backward is NaN at 0
            zero = (r == 0).unsqueeze(-1)
            r_safe = torch.where(r == 0, torch.full_like(r, 0.5 * self.config.cutoff), r)
            radial = self.radial(r_safe) * self.envelope(r_safe).unsqueeze(-1)
            feats.append(torch.where(zero, self.radial(torch.zeros_like(r[..., :1, :1])).detach(), radial))
        return feats[0] if len(feats) == 1 else torch.cat(feats, dim=-1)

    def atomic_energies(self, tokens: torch.Tensor, numbers: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Atomic energies ``(B, L)`` (zero where padded) from tokens ``(B, L, D)``."""
        element = self.element_index(torch.where(mask, numbers, self.config.atomic_numbers[0]))
        e = self.config.energy_scale * self.readout(self.norm(tokens)).squeeze(-1) + self.e0.to(tokens.dtype)[element]
        return e * mask.to(e.dtype)

    def forward(self, batch: AtomsBatch, compute_forces: bool = True, training: bool = False,
                return_tokens: bool = False) -> dict[str, torch.Tensor]:
        where = "TransformerPotential.forward"
        if not isinstance(batch, AtomsBatch):
            raise TypeError(f"{where}: `batch` must be an AtomsBatch, got {type(batch).__name__}")
        dtype = self.e0.dtype
        if batch.positions.dtype != dtype:
            raise TypeError(f"{where}: positions are {batch.positions.dtype} but the model is {dtype}; "
                            f"use batch.to(dtype={dtype})")
        if bool(batch.pbc.any()):
            raise ValueError(f"{where}: periodic cells are not supported (molecules only), got pbc "
                             f"{batch.pbc.tolist()}; use equikit.models.Potential for periodic systems")
        if not bool(torch.isfinite(batch.positions).all()):
            raise ValueError(f"{where}: positions contain NaN or inf")
        with torch.enable_grad() if compute_forces else contextlib.nullcontext():
            return self._forward(batch, compute_forces, training, return_tokens)

    def _forward(self, batch, compute_forces, training, return_tokens):
        pos = batch.positions
        if compute_forces and not pos.requires_grad:
            pos = pos.detach().requires_grad_(True)
        n_struct = batch.num_graphs
        dense, mask = pad_atoms(pos, batch.batch, n_struct)
        numbers, _ = pad_atoms(batch.numbers, batch.batch, n_struct)
        tokens = self.encode(dense, numbers, mask)
        node_e = self.atomic_energies(tokens, numbers, mask)[mask]
        energy = torch.zeros(n_struct, dtype=pos.dtype, device=pos.device).index_add_(0, batch.batch, node_e)
        out = {"energy": energy, "node_energy": node_e}
        if compute_forces:
            (g,) = torch.autograd.grad(energy.sum(), pos, create_graph=training)
            out["forces"] = -g
        if return_tokens:
            out["tokens"] = tokens[mask]
        return out

    def count_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


__all__ = ["AttentionBlock", "TransformerPotential", "TransformerPotentialConfig", "centre_positions",
           "fourier_features", "masked_attention", "masked_attention_with_pair_values", "pad_atoms",
           "pair_distances"]
