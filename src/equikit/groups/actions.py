"""Group actions on data.

An :class:`Action` pairs a :class:`~equikit.groups.Group` with a way of moving data. It acts
on a tensor or a pytree (dict/tuple/list) of tensors and satisfies
``act(compose(g, h), x) == act(g, act(h, x))``.

Batching rule (used by every action here): data has leading *batch dims* followed by the
*event dims* the action works on (e.g. the trailing ``3`` of positions, or ``H, W`` of an
image). A group element ``g`` of shape ``(*gB, *element_shape)`` is aligned with the data's
batch dims **from the left** and broadcast over the rest: a single element (``gB == ()``) moves
every sample alike, a batch of ``B`` elements moves sample ``b`` by ``g[b]``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from equikit._utils import check_int, tree_map
from equikit.groups.base import Element, Group
from equikit.groups.continuous import Scaling
from equikit.groups.finite import Cyclic, CyclicShift, Dihedral, Permutation
from equikit.groups.product import DirectProduct


class Action(abc.ABC):
    """Base class: subclasses set ``group`` and implement ``_act(g, x)``."""

    group: Group
    #: whether a batch of elements can act on data in one call (see the batching rule)
    batchable: bool = True

    def __call__(self, g: Element, x: Any) -> Any:
        self.group.check_element(g, "g", type(self).__name__)
        return self._act(g, x)

    @abc.abstractmethod
    def _act(self, g: Element, x: Any) -> Any: ...

    def element_batch_ndim(self, g: Element) -> int:
        return len(self.group.batch_shape(g))


# --------------------------------------------------------------------------- helpers
def align(t: torch.Tensor, elem_ndim: int, data: torch.Tensor, event_ndim: int, where: str):
    """Reshape a group-element tensor ``(*gB, *e)`` to ``(*gB, 1, ..., 1, *e)`` so that its batch
    dims align from the left with the ``data.ndim - event_ndim`` batch dims of ``data``."""
    g_batch = tuple(t.shape[: t.ndim - elem_ndim])
    d_batch = tuple(data.shape[: data.ndim - event_ndim])
    if len(g_batch) > len(d_batch):
        raise ValueError(
            f"{where}: a batch of group elements with batch shape {g_batch} cannot act on data of "
            f"shape {tuple(data.shape)}, which has only the batch dims {d_batch}"
        )
    for i, (a, b) in enumerate(zip(g_batch, d_batch)):
        if a not in (1, b):
            raise ValueError(
                f"{where}: group elements with batch shape {g_batch} do not match the data's "
                f"batch dims {d_batch} (dim {i}: {a} vs {b})"
            )
    pad = len(d_batch) - len(g_batch)
    return t.reshape(*g_batch, *([1] * pad), *t.shape[t.ndim - elem_ndim :])


def apply_matrix(m: torch.Tensor, data: torch.Tensor, where: str) -> torch.Tensor:
    """``data -> m data`` on the last dim, with ``m`` of shape ``(*gB, d, d)`` aligned from the
    left with the batch dims of ``data (..., d)``. Done as one (batched) GEMM, ``data @ m^T``,
    rather than many broadcast 3x3 products."""
    nb = m.ndim - 2
    align(m, 2, data, 1, where)  # validates the batch dims
    d = data.shape[-1]
    if nb == 1 and data.ndim >= 2 and data.stride(0) == 0 and m.shape[0] == data.shape[0]:
        # one sample broadcast over a batch of k elements (how the checker calls actions):
        # a single GEMM (R, d) @ (d, k*d) instead of k small products
        k = m.shape[0]
        flat = data[0].reshape(-1, d)
        out = flat @ m.permute(2, 0, 1).reshape(d, k * d)
        # contiguous: models downstream (flatten, linear layers) are slower on strided views
        return out.reshape(-1, k, d).transpose(0, 1).contiguous().view(data.shape)
    lead = data.shape[:nb]
    rows = data.reshape(*lead, -1, data.shape[-1])
    if nb and d <= 4:
        # tiny inner dim: d fused multiply-adds beat a batched GEMM
        out = rows[..., 0:1] * m[..., None, :, 0]
        for j in range(1, d):
            out = torch.addcmul(out, rows[..., j : j + 1], m[..., None, :, j])
        return out.reshape(data.shape)
    return (rows @ m.transpose(-1, -2)).reshape(data.shape)


def _require_tensor(x: Any, where: str, name: str = "x") -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{where}: `{name}` must be a torch.Tensor, got {type(x).__name__}")
    return x


def _require_mapping(x: Any, where: str) -> Mapping:
    if not isinstance(x, Mapping):
        raise TypeError(
            f"{where}: data must be a dict of tensors for a keyed action, got {type(x).__name__}"
        )
    return x


def _check_keys(x: Mapping, known: set[str], required: set[str], where: str) -> None:
    missing = sorted(required - set(x))
    if missing:
        raise ValueError(f"{where}: data is missing the key(s) {missing}; got keys {sorted(x)}")
    unknown = sorted(set(x) - known)
    if unknown:
        raise ValueError(
            f"{where}: data has key(s) {unknown} that this action was not told about; declare "
            f"each key's role (known: {sorted(known)}) so nothing is left untransformed by mistake"
        )


def _permute_dim(x: torch.Tensor, g: torch.Tensor, dim: int, n: int, where: str) -> torch.Tensor:
    """Move slot ``i`` of ``x`` along ``dim`` to slot ``g[i]`` (``x'[g(i)] = x[i]``)."""
    dim = dim % x.ndim
    if x.shape[dim] != n:
        raise ValueError(
            f"{where}: expected size {n} along dim {dim} of data of shape {tuple(x.shape)}, "
            f"got {x.shape[dim]}"
        )
    inv = Permutation(n).inverse(g)  # x'[j] = x[inv[j]]
    if inv.ndim == 1:
        return x.index_select(dim, inv)
    if inv.ndim - 1 > dim:
        raise ValueError(
            f"{where}: group elements with batch shape {tuple(inv.shape[:-1])} need at least "
            f"{inv.ndim - 1} batch dims before the permuted dim {dim} of shape {tuple(x.shape)}"
        )
    index = align(inv, 1, x[(slice(None),) * dim + (0,)], x.ndim - dim - 1, where)
    # index now has shape (*gB, 1.., n); move n to `dim` and broadcast over the rest
    index = index.reshape(*index.shape, *([1] * (x.ndim - dim - 1)))
    return torch.gather(x, dim, index.expand(*x.shape[:dim], n, *x.shape[dim + 1 :]))


# --------------------------------------------------------------------------- basic actions
@dataclass(frozen=True)
class Trivial(Action):
    """Every element acts as the identity: the output action of an invariant function."""

    group: Group

    def _act(self, g, x):
        return x


@dataclass(frozen=True)
class MatrixRep(Action):
    """``x -> rho(g) x`` on the last dim of every leaf, for an explicit representation ``rho``.

    ``rep`` maps a batch of elements to matrices ``(..., dim, dim)``; ``None`` means the group's
    elements already are the matrices (SO(d), O(d), GL+(d), SL(d)).
    """

    group: Group
    rep: Callable[[Element], torch.Tensor] | None = None

    def _act(self, g, x):
        where = "MatrixRep"
        rho = g if self.rep is None else self.rep(g)
        if not isinstance(rho, torch.Tensor) or rho.ndim < 2 or rho.shape[-1] != rho.shape[-2]:
            raise ValueError(f"{where}: `rep` must return square matrices, got {type(rho)}")
        dim = rho.shape[-1]

        def act(leaf):
            leaf = _require_tensor(leaf, where)
            if leaf.ndim == 0 or leaf.shape[-1] != dim:
                raise ValueError(
                    f"{where}: data's last dim must be the representation dimension {dim}, "
                    f"got shape {tuple(leaf.shape)}"
                )
            return apply_matrix(rho.to(leaf.dtype), leaf, where)

        return tree_map(act, x)


@dataclass(frozen=True)
class PointCloud(Action):
    """Rigid/affine motion of a point cloud: ``pos -> A pos + t``, ``vector -> A vector``,
    ``pseudovector -> det(A) A pseudovector``, scalars unchanged.

    Works for every group with ``as_affine`` (Translation, Scaling, SO, O, GLPlus, SL, E, SE,
    Affine). Data is either a tensor of positions ``(..., d)`` or a dict whose every key is
    declared as ``pos``, one of ``vectors``, ``pseudovectors`` or ``scalars``.

    Example:
        >>> import torch
        >>> from equikit.groups import E, PointCloud
        >>> act = PointCloud(E(3), vectors=("vel",), scalars=("charge",))
        >>> data = {"pos": torch.randn(5, 3), "vel": torch.randn(5, 3), "charge": torch.ones(5)}
        >>> g = E(3).take(E(3).sample(1, generator=0), 0)
        >>> moved = act(g, data)
        >>> A, t = E(3).as_affine(g)
        >>> bool(torch.allclose(moved["pos"], data["pos"] @ A.T + t, atol=1e-6))
        True
        >>> bool(torch.allclose(moved["vel"], data["vel"] @ A.T, atol=1e-6))
        True
    """

    group: Group
    pos: str | None = "pos"
    vectors: tuple[str, ...] = ()
    pseudovectors: tuple[str, ...] = ()
    scalars: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not hasattr(self.group, "as_affine"):
            raise TypeError(
                f"PointCloud: `group` must act on R^d (have `as_affine`), got {self.group!r}"
            )
        for name in ("vectors", "pseudovectors", "scalars"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, (value,))

    def _affine(self, g, d: int, dtype):
        if isinstance(self.group, Scaling):
            a, t = self.group.as_affine(g, d)
        else:
            a, t = self.group.as_affine(g)
        if a.shape[-1] != d:
            raise ValueError(
                f"PointCloud: {self.group!r} acts on R^{a.shape[-1]} but the data's last dim is {d}"
            )
        return a.to(dtype), t.to(dtype)

    def _move(self, g, leaf, kind):
        where = "PointCloud"
        leaf = _require_tensor(leaf, where)
        if leaf.ndim == 0 or not leaf.is_floating_point():
            raise ValueError(
                f"{where}: {kind} must be floating tensors (..., d), got {leaf.dtype} "
                f"{tuple(leaf.shape)}"
            )
        a, t = self._affine(g, leaf.shape[-1], leaf.dtype)
        out = apply_matrix(a, leaf, where)
        if kind == "positions":
            out = out + align(t, 1, leaf, 1, where)
        elif kind == "pseudovectors":
            out = out * align(torch.linalg.det(a), 0, leaf, 1, where).unsqueeze(-1)
        return out

    def _act(self, g, x):
        if isinstance(x, torch.Tensor):
            return self._move(g, x, "positions")
        x = _require_mapping(x, "PointCloud")
        keys = {self.pos} if self.pos else set()
        known = keys | set(self.vectors) | set(self.pseudovectors) | set(self.scalars)
        _check_keys(x, known, keys | set(self.vectors) | set(self.pseudovectors), "PointCloud")
        out = dict(x)
        if self.pos:
            out[self.pos] = self._move(g, x[self.pos], "positions")
        for k in self.vectors:
            out[k] = self._move(g, x[k], "vectors")
        for k in self.pseudovectors:
            out[k] = self._move(g, x[k], "pseudovectors")
        return out


@dataclass(frozen=True)
class Rescale(Action):
    """The scaling action ``x -> s**degree x`` (degree 1: lengths; 0: invariants; -1: ...)."""

    group: Group = field(default_factory=Scaling)
    degree: float = 1.0

    def _act(self, g, x):
        def act(leaf):
            leaf = _require_tensor(leaf, "Rescale")
            return leaf * align(g.to(leaf.dtype), 0, leaf, 0, "Rescale") ** self.degree

        return tree_map(act, x)


# --------------------------------------------------------------------------- permutations
@dataclass(frozen=True)
class NodePermutation(Action):
    """Relabel the nodes of a graph by a permutation ``sigma``: node ``i`` becomes node
    ``sigma(i)``.

    - node-level tensors (features, positions, labels, ``batch``): permuted along their node
      dim, ``x'[sigma(i)] = x[i]``;
    - dense adjacencies ``(..., n, n)``: ``A' = P A P^T``;
    - ``edge_index (2, E)``: relabelled, ``edge_index' = sigma[edge_index]``; edge order and
      edge attributes are unchanged.

    ``nodes`` maps each node-level key to its node dim (a tuple of keys means dim ``-2``, the
    ``(..., n, C)`` layout). For a plain tensor, ``node_dim`` is used.

    Example:
        >>> import torch
        >>> from equikit.groups import NodePermutation
        >>> act = NodePermutation(3, nodes={"x": -2}, edge_index="edge_index")
        >>> data = {"x": torch.tensor([[1.0], [2.0], [3.0]]), "edge_index": torch.tensor([[0, 1], [1, 2]])}
        >>> out = act(torch.tensor([2, 0, 1]), data)  # node 0 -> 2, 1 -> 0, 2 -> 1
        >>> out["x"].flatten().tolist(), out["edge_index"].tolist()
        ([2.0, 3.0, 1.0], [[2, 0], [0, 1]])
    """

    n: int
    nodes: Mapping[str, int] | tuple[str, ...] = ("x",)
    adjacency: tuple[str, ...] = ()
    edge_index: str | None = None
    invariant: tuple[str, ...] = ()
    node_dim: int = -2

    def __post_init__(self) -> None:
        check_int(self.n, "n", "NodePermutation", minimum=1)
        nodes = self.nodes
        if isinstance(nodes, str):
            nodes = (nodes,)
        if not isinstance(nodes, Mapping):
            nodes = {k: -2 for k in nodes}
        nodes = dict(nodes)
        for key, dim in [*nodes.items(), ("node_dim", self.node_dim)]:
            if isinstance(dim, bool) or not isinstance(dim, int) or dim >= 0:
                raise ValueError(
                    f"NodePermutation: node dims count from the end (negative ints, e.g. -2 for "
                    f"(..., n, C)) so that leading batch dims can be added; got {key}={dim!r}"
                )
        object.__setattr__(self, "nodes", tuple(sorted(nodes.items())))
        for name in ("adjacency", "invariant"):
            if isinstance(getattr(self, name), str):
                object.__setattr__(self, name, (getattr(self, name),))

    @property
    def group(self) -> Permutation:  # type: ignore[override]
        return Permutation(self.n)

    @property
    def batchable(self) -> bool:  # type: ignore[override]
        return self.edge_index is None  # relabelling an edge list takes one element at a time

    def _act(self, g, x):
        where = "NodePermutation"
        if isinstance(x, torch.Tensor):
            return _permute_dim(x, g, self.node_dim, self.n, where)
        x = _require_mapping(x, where)
        nodes = dict(self.nodes)
        required = set(nodes) | set(self.adjacency) | ({self.edge_index} - {None})
        _check_keys(x, required | set(self.invariant), required, where)
        out = dict(x)
        for key, dim in nodes.items():
            out[key] = _permute_dim(_require_tensor(x[key], where, key), g, dim, self.n, where)
        for key in self.adjacency:
            a = _require_tensor(x[key], where, key)
            if a.ndim < 2:
                raise ValueError(f"{where}: adjacency `{key}` must be (..., n, n), got {a.shape}")
            a = _permute_dim(a, g, -2, self.n, where)
            out[key] = _permute_dim(a, g, -1, self.n, where)
        if self.edge_index is not None:
            ei = _require_tensor(x[self.edge_index], where, self.edge_index)
            if ei.ndim != 2 or ei.shape[0] != 2 or ei.is_floating_point():
                raise ValueError(
                    f"{where}: `{self.edge_index}` must be an integer tensor (2, E), got "
                    f"{ei.dtype} {tuple(ei.shape)}"
                )
            if g.ndim != 1:
                raise ValueError(
                    f"{where}: edge_index data takes one permutation at a time, got a batch "
                    f"of shape {tuple(g.shape[:-1])}"
                )
            if ei.numel() and (int(ei.min()) < 0 or int(ei.max()) >= self.n):
                raise ValueError(f"{where}: `{self.edge_index}` has node ids outside [0, {self.n})")
            out[self.edge_index] = g[ei]
        return out


@dataclass(frozen=True)
class FeaturePermutation(Action):
    """Permute one dimension of a tensor (e.g. hidden units): ``x'[..., sigma(i)] = x[..., i]``
    along ``dim``; used for weight-space and hidden-unit symmetries."""

    n: int
    dim: int = -1

    def __post_init__(self) -> None:
        check_int(self.n, "n", "FeaturePermutation", minimum=1)
        if isinstance(self.dim, bool) or not isinstance(self.dim, int) or self.dim >= 0:
            raise ValueError(
                f"FeaturePermutation: `dim` must be negative (counted from the end), got {self.dim!r}"
            )

    @property
    def group(self) -> Permutation:  # type: ignore[override]
        return Permutation(self.n)

    def _act(self, g, x):
        return tree_map(
            lambda t: _permute_dim(
                _require_tensor(t, "FeaturePermutation"), g, self.dim, self.n, "FeaturePermutation"
            ),
            x,
        )


# --------------------------------------------------------------------------- shifts, images
def _circular_shift(x: torch.Tensor, s: torch.Tensor, dims: tuple[int, ...], where: str):
    """``x'[i + s] = x[i]`` along ``dims`` (circular)."""
    x = _require_tensor(x, where)
    if s.ndim == 1:  # one element: plain roll
        return torch.roll(x, shifts=tuple(int(v) for v in s), dims=dims)
    out = x
    for axis, d in enumerate(dims):
        n = x.shape[d]
        event = x.ndim - d
        idx = torch.remainder(torch.arange(n, device=x.device) - s[..., axis, None], n)
        idx = align(idx, 1, x, event, where)
        idx = idx.reshape(*idx.shape, *([1] * (event - 1)))
        out = torch.gather(out, d, idx.expand(x.shape))
    return out


@dataclass(frozen=True)
class SequenceShift(Action):
    """Circular shift of sequences of the given ``length`` along ``dim`` (default ``-2``, the
    ``(..., L, C)`` layout): ``x'[t + s] = x[t]``. Group: ``CyclicShift((length,))``."""

    length: int
    dim: int = -2

    def __post_init__(self) -> None:
        check_int(self.length, "length", "SequenceShift", minimum=1)
        if self.dim >= 0:
            raise ValueError(
                f"SequenceShift: `dim` must be negative (counted from the end), got {self.dim}"
            )

    @property
    def group(self) -> CyclicShift:  # type: ignore[override]
        return CyclicShift((self.length,))

    def _act(self, g, x):
        def act(t):
            t = _require_tensor(t, "SequenceShift")
            if t.ndim < -self.dim or t.shape[self.dim] != self.length:
                raise ValueError(
                    f"SequenceShift: expected length {self.length} along dim {self.dim}, got "
                    f"shape {tuple(t.shape)}"
                )
            return _circular_shift(t, g, (t.ndim + self.dim,), "SequenceShift")

        return tree_map(act, x)


@dataclass(frozen=True)
class ImageShift(Action):
    """Circular shift of images ``(..., H, W)``: ``x'[i + s0, j + s1] = x[i, j]``.
    Group: ``CyclicShift((H, W))``."""

    shape: tuple[int, int]

    def __post_init__(self) -> None:
        if len(tuple(self.shape)) != 2:
            raise ValueError(f"ImageShift: `shape` must be (H, W), got {self.shape!r}")
        object.__setattr__(self, "shape", tuple(self.shape))

    @property
    def group(self) -> CyclicShift:  # type: ignore[override]
        return CyclicShift(self.shape)

    def _act(self, g, x):
        def act(t):
            t = _require_tensor(t, "ImageShift")
            if t.ndim < 2 or tuple(t.shape[-2:]) != self.shape:
                raise ValueError(
                    f"ImageShift: images must be (..., {self.shape[0]}, {self.shape[1]}), got "
                    f"{tuple(t.shape)}"
                )
            return _circular_shift(t, g, (t.ndim - 2, t.ndim - 1), "ImageShift")

        return tree_map(act, x)


def _select(g: torch.Tensor, options: list[torch.Tensor], t: torch.Tensor, where: str):
    """Pick ``options[g]`` per batch element (``g`` aligned with the batch dims of ``t``)."""
    if g.ndim == 0:
        return options[int(g)]
    stacked = torch.stack(options)  # (K, *t.shape)
    idx = align(g, 0, t, 2, where)
    idx = idx.reshape(1, *idx.shape, 1, 1).expand(1, *t.shape)
    return torch.gather(stacked, 0, idx).squeeze(0)


@dataclass(frozen=True)
class ImageRot90(Action):
    """Rotation of square images ``(..., H, H)`` by ``k`` quarter turns
    (``torch.rot90(x, k, dims=(-2, -1))``). Group: ``Cyclic(4)``."""

    @property
    def group(self) -> Cyclic:  # type: ignore[override]
        return Cyclic(4)

    def _act(self, g, x):
        def act(t):
            t = _require_tensor(t, "ImageRot90")
            if t.ndim < 2 or t.shape[-1] != t.shape[-2]:
                raise ValueError(
                    f"ImageRot90: images must be square (..., H, H), got {tuple(t.shape)}"
                )
            return _select(g, [torch.rot90(t, k, dims=(-2, -1)) for k in range(4)], t, "ImageRot90")

        return tree_map(act, x)


@dataclass(frozen=True)
class ImageFlip(Action):
    """Mirror images ``(..., H, W)`` along ``axis`` (-1: left-right, -2: up-down).
    Group: ``Cyclic(2)``."""

    axis: int = -1

    def __post_init__(self) -> None:
        if self.axis not in (-1, -2):
            raise ValueError(f"ImageFlip: `axis` must be -1 or -2, got {self.axis!r}")

    @property
    def group(self) -> Cyclic:  # type: ignore[override]
        return Cyclic(2)

    def _act(self, g, x):
        def act(t):
            t = _require_tensor(t, "ImageFlip")
            if t.ndim < 2:
                raise ValueError(f"ImageFlip: images must be (..., H, W), got {tuple(t.shape)}")
            return _select(g, [t, torch.flip(t, dims=(self.axis,))], t, "ImageFlip")

        return tree_map(act, x)


@dataclass(frozen=True)
class ImageDihedral(Action):
    """D4 on square images ``(..., H, H)``: ``(k, s) = r^k f^s`` acts as
    ``rot90(flip(x, -1) if s else x, k)``, the mirror first, then ``k`` quarter turns.
    An action of ``Dihedral(4)``, since a mirror conjugates a quarter turn to its inverse.

    Example:
        >>> import torch
        >>> x = torch.arange(4.0).reshape(2, 2)
        >>> ImageDihedral()(torch.tensor([1, 1]), x).tolist()
        [[0.0, 2.0], [1.0, 3.0]]
    """

    @property
    def group(self) -> Dihedral:  # type: ignore[override]
        return Dihedral(4)

    def _act(self, g, x):
        def act(t):
            t = _require_tensor(t, "ImageDihedral")
            if t.ndim < 2 or t.shape[-1] != t.shape[-2]:
                raise ValueError(f"ImageDihedral: images must be square (..., H, H), got {tuple(t.shape)}")
            options = [torch.rot90(torch.flip(t, (-1,)) if s else t, k, (-2, -1)) for s in (0, 1) for k in range(4)]
            return _select(g[..., 1] * 4 + g[..., 0], options, t, "ImageDihedral")

        return tree_map(act, x)


# --------------------------------------------------------------------------- combinators
@dataclass(frozen=True, init=False)
class Compose(Action):
    """Product action of ``G1 x G2 x ...``: ``(g1, g2, ...)`` applies ``g_k`` with action ``k``,
    last first. The actions must commute (true for e.g. node relabelling and rigid motions).

    Example: ``Compose(NodePermutation(10, nodes={"pos": -2}), PointCloud(E(3)))``.
    """

    actions: tuple[Action, ...]

    def __init__(self, *actions: Action) -> None:
        if len(actions) < 2:
            raise ValueError(f"Compose: needs at least two actions, got {len(actions)}")
        for a in actions:
            if not isinstance(a, Action):
                raise TypeError(f"Compose: arguments must be Actions, got {type(a).__name__}")
        object.__setattr__(self, "actions", tuple(actions))

    @property
    def group(self) -> DirectProduct:  # type: ignore[override]
        return DirectProduct(*(a.group for a in self.actions))

    @property
    def batchable(self) -> bool:  # type: ignore[override]
        return all(a.batchable for a in self.actions)

    def _act(self, g, x):
        for action, gk in reversed(list(zip(self.actions, g))):
            x = action._act(gk, x)
        return x


@dataclass(frozen=True, init=False)
class OnKeys(Action):
    """Apply a different action of the same group to each key of a dict; ``invariant`` keys
    are passed through unchanged. Every key of the data must be named.

    Example (irreps features beside positions)::

        OnKeys({"pos": PointCloud(O(3)), "feat": IrrepsRep("4x0e+2x1o")}, invariant=("z",))
    """

    actions: tuple[tuple[str, Action], ...]
    invariant: tuple[str, ...]

    def __init__(self, actions: Mapping[str, Action], invariant: tuple[str, ...] = ()) -> None:
        if not isinstance(actions, Mapping) or not actions:
            raise ValueError("OnKeys: `actions` must be a non-empty dict {key: Action}")
        groups = {a.group for a in actions.values()}
        if len(groups) != 1:
            raise ValueError(f"OnKeys: all actions must share one group, got {sorted(map(repr, groups))}")
        if isinstance(invariant, str):
            invariant = (invariant,)
        object.__setattr__(self, "actions", tuple(actions.items()))
        object.__setattr__(self, "invariant", tuple(invariant))

    @property
    def group(self) -> Group:  # type: ignore[override]
        return self.actions[0][1].group

    @property
    def batchable(self) -> bool:  # type: ignore[override]
        return all(a.batchable for _, a in self.actions)

    def _act(self, g, x):
        x = _require_mapping(x, "OnKeys")
        keys = {k for k, _ in self.actions}
        _check_keys(x, keys | set(self.invariant), keys, "OnKeys")
        out = dict(x)
        for key, action in self.actions:
            out[key] = action._act(g, x[key])
        return out
