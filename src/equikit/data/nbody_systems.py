"""Spring and gravity particle systems (the published simulators' protocols, written here and
vectorised), cached with a manifest like the charged system, and multi-step trajectory windows
for trajectory models.

**Springs** (Kipf et al. 2018 NRI ``SpringSim``, as shipped with EGNN / SEGNN / EqMotion;
``SpringsConfig()`` defaults): 5 particles; a spring between each pair with probability 1/2
(``choice([0, 0.5, 1], size=(n, n), p=[1/2, 0, 1/2])``, lower triangle mirrored, zero
diagonal); positions ``randn(3, n) * 0.5``; velocities Gaussian directions rescaled to speed
0.5; walls at +-5 reflect the initial state only; force ``F_i = -k sum_j e_ij (x_i - x_j)``,
``k = 0.1``, components clipped at +-100; leapfrog (kick, then drift / save / kick) with
``dt = 0.001`` for 5000 steps saved every 100 (49 frames, initial state not saved); per
simulation the stream draws the ``n x n`` uniforms of ``choice``, positions, velocities and
two ``randn(49, 3, n)`` noise arrays (times ``noise_var = 0``). Seed 42 (the published
generator's default), 10000 / 2000 / 2000 simulations in the order train, val, test.

**Gravity** (Brandstetter et al. 2022 SEGNN ``GravitySim``, ``gravity_small``;
``GravityConfig()`` defaults): 5 unit masses, ``G = 1``; positions and velocities
``randn(n, 3)`` (no rescaling), centre-of-mass velocity removed; softened Newtonian
acceleration ``a_i = G sum_j m_j (x_j - x_i) / (|x_j - x_i|^2 + s^2)^{3/2}``, ``s = 0.1``;
velocity Verlet (half kick, drift, half kick) with ``dt = 0.001`` for 5000 steps, saving the
state *before* every 100th step (50 frames, frame 0 the initial state); per simulation the
stream draws positions, velocities and three ``randn(50, n, 3)`` noise arrays. Seed 43.
The conserved energy of this integrator is ``sum_i m_i |v_i|^2 / 2 - G sum_{i<j} m_i m_j /
sqrt(|x_i - x_j|^2 + s^2)`` (the published ``_energy`` omits the softening, so its "energy"
is not the conserved one).

Reference loops (:func:`simulate_springs_reference`, :func:`simulate_gravity_reference`, one
simulation per call in the published layouts, drawing with ``rng.choice`` / ``rng.randn``
as published) and vectorised versions (:func:`simulate_springs`, :func:`simulate_gravity`)
perform the same IEEE operations in the same order, so they agree bitwise (tested). Sums over
particles are explicit left-to-right sums, not BLAS products (the published gravity code uses
``@``), so the published files agree with ours to rounding on early frames.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from equikit._utils import check_int, check_positive
from equikit.data._cache import data_dir, load_arrays, read_manifest
from equikit.data.nbody import NBodyTrajectories, _reflect_from_walls, _store_splits, complete_edge_index
from equikit.data.nbody import _check_config_type as _check

SPLITS = ("train", "val", "test")
GENERATOR_VERSION = 1


# --------------------------------------------------------------------------- recipes
@dataclass(frozen=True)
class _Recipe:
    """The fields (and defaults) shared by the springs and gravity recipes, their validation,
    split sizes and cache key; each system appends its own fields."""

    n_particles: int = 5
    n_train: int = 10000
    n_val: int = 2000
    n_test: int = 2000
    steps: int = 5000
    sample_every: int = 100
    dt: float = 0.001

    def __post_init__(self) -> None:
        where = type(self).__name__
        check_int(self.n_particles, "n_particles", where, minimum=2)
        for name in ("n_train", "n_val", "n_test", "seed"):
            check_int(getattr(self, name), name, where, minimum=0)
        check_int(self.steps, "steps", where, minimum=1)
        check_int(self.sample_every, "sample_every", where, minimum=1)
        if self.steps % self.sample_every or self.steps // self.sample_every < 2:
            raise ValueError(f"{where}: `steps` must be a multiple of `sample_every` with at least 2 frames, "
                             f"got steps={self.steps}, sample_every={self.sample_every}")
        check_positive(self.dt, "dt", where)
        if float(self.noise_var) < 0:
            raise ValueError(f"{where}: `noise_var` must be >= 0, got {self.noise_var}")

    def split_sizes(self) -> dict[str, int]:
        return {"train": self.n_train, "val": self.n_val, "test": self.n_test}

    def recipe(self) -> dict:
        """Everything that determines the data (written to the manifest)."""
        return {"system": self.system, "generator_version": GENERATOR_VERSION,
                "random_stream": "numpy.random.RandomState (legacy MT19937)", **dataclasses.asdict(self)}

    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.recipe(), sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class SpringsConfig(_Recipe):
    """Recipe of the springs system (defaults: the published protocol, see the module doc).

    Example:
        >>> SpringsConfig().n_frames, SpringsConfig().seed
        (49, 42)
    """

    loc_std: float = 0.5
    vel_norm: float = 0.5
    interaction_strength: float = 0.1
    max_force: float = 100.0
    box_size: float = 5.0
    p_spring: float = 0.5
    noise_var: float = 0.0
    seed: int = 42
    system = "springs"

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("loc_std", "vel_norm", "interaction_strength", "max_force", "box_size"):
            check_positive(getattr(self, name), name, "SpringsConfig")
        if not 0.0 <= float(self.p_spring) <= 1.0:
            raise ValueError(f"SpringsConfig: `p_spring` must be in [0, 1], got {self.p_spring}")

    @property
    def n_frames(self) -> int:
        return self.steps // self.sample_every - 1


@dataclass(frozen=True)
class GravityConfig(_Recipe):
    """Recipe of the gravity system (defaults: SEGNN's ``gravity_small``, see the module doc).

    Example:
        >>> GravityConfig().n_frames, GravityConfig().softening
        (50, 0.1)
    """

    interaction_strength: float = 1.0
    softening: float = 0.1
    noise_var: float = 0.0
    seed: int = 43
    system = "gravity"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self.interaction_strength, "interaction_strength", "GravityConfig")
        if float(self.softening) < 0:
            raise ValueError(f"GravityConfig: `softening` must be >= 0, got {self.softening}")

    @property
    def n_frames(self) -> int:
        return self.steps // self.sample_every


@dataclass(frozen=True)
class SystemTrajectories:
    """Trajectories of one split (numpy float64).

    Shapes: ``pos, vel (S, T, n, 3)``; ``node (S, n)`` per-particle scalars (masses for
    gravity, charges for the charged system, ones for springs); ``pair (S, n, n)`` the
    interaction of each pair (spring constants ``e_ij``, ``m_i m_j``, ``q_i q_j``).
    """

    pos: np.ndarray
    vel: np.ndarray
    node: np.ndarray
    pair: np.ndarray

    def __len__(self) -> int:
        return int(self.pos.shape[0])

    def head(self, k: int) -> SystemTrajectories:
        return SystemTrajectories(self.pos[:k], self.vel[:k], self.node[:k], self.pair[:k])

    @staticmethod
    def from_charged(traj: NBodyTrajectories) -> SystemTrajectories:
        """The charged system in this form (``node = q``, ``pair = q q^T``)."""
        q = traj.charges
        return SystemTrajectories(traj.pos, traj.vel, q, q[:, :, None] * q[:, None, :])


def _check_rng(rng, where: str) -> np.random.RandomState:
    if not isinstance(rng, np.random.RandomState):
        raise TypeError(f"{where}: `rng` must be a numpy.random.RandomState, got {type(rng).__name__}")
    return rng


# --------------------------------------------------------------------------- springs
def _spring_forces(x: np.ndarray, k_e: np.ndarray, cfg: SpringsConfig) -> np.ndarray:
    """``x (..., 3, n)``, ``k_e = -k e (..., n, n)`` with zero diagonal -> clipped forces."""
    diff = x[..., :, :, None] - x[..., :, None, :]  # x_i - x_j
    force = (k_e[..., None, :, :] * diff).sum(axis=-1)
    return np.clip(force, -cfg.max_force, cfg.max_force, out=force)


def _leapfrog(x, v, force, cfg):
    """Kick, then (drift, save, kick) ``steps - 1`` times; ``x, v (..., 3, n)`` -> frames."""
    x, v = x.copy(), v.copy()
    loc = np.zeros((*x.shape[:-2], cfg.n_frames, *x.shape[-2:]))
    vel = np.zeros_like(loc)
    v += cfg.dt * force(x)
    frame = 0
    for step in range(1, cfg.steps):
        x += cfg.dt * v
        if step % cfg.sample_every == 0:
            loc[..., frame, :, :], vel[..., frame, :, :] = x, v
            frame += 1
        v += cfg.dt * force(x)
    return loc, vel


def simulate_springs_reference(rng: np.random.RandomState, config: SpringsConfig | None = None):
    """One springs simulation, the protocol step by step in the published ``(3, n)`` layout.
    Returns ``loc, vel (T, 3, n)`` and ``edges (n, n)``."""
    cfg = _check(config, SpringsConfig, "simulate_springs_reference")
    rng = _check_rng(rng, "simulate_springs_reference")
    n = cfg.n_particles
    p = float(cfg.p_spring)
    edges = rng.choice(np.array([0.0, 0.5, 1.0]), size=(n, n), p=[1.0 - p, 0.0, p])
    edges = np.tril(edges) + np.tril(edges, -1).T
    np.fill_diagonal(edges, 0.0)
    x = rng.randn(3, n) * cfg.loc_std
    v = rng.randn(3, n)
    v = v * cfg.vel_norm / np.sqrt((v**2).sum(axis=0)).reshape(1, -1)
    _reflect_from_walls(x, v, cfg.box_size, "springs")
    k_e = -cfg.interaction_strength * edges
    loc, vel = _leapfrog(x, v, lambda y: _spring_forces(y, k_e, cfg), cfg)
    a, b = rng.randn(cfg.n_frames, 3, n), rng.randn(cfg.n_frames, 3, n)
    if cfg.noise_var:
        loc, vel = loc + a * cfg.noise_var, vel + b * cfg.noise_var
    return loc, vel, edges


def simulate_springs(rng: np.random.RandomState, n_sims: int, config: SpringsConfig | None = None,
                     *, chunk: int = 1000) -> SystemTrajectories:
    """``n_sims`` springs simulations at once, bitwise equal to ``n_sims`` calls of
    :func:`simulate_springs_reference` on the same stream (which it advances identically).

    Example:
        >>> import numpy as np
        >>> t = simulate_springs(np.random.RandomState(0), 3, SpringsConfig(steps=200, sample_every=50))
        >>> t.pos.shape, t.pair.shape
        ((3, 3, 5, 3), (3, 5, 5))
    """
    where = "simulate_springs"
    rng = _check_rng(rng, where)
    check_int(n_sims, "n_sims", where, minimum=0)
    cfg = _check(config, SpringsConfig, where)
    n, T = cfg.n_particles, cfg.n_frames
    p = float(cfg.p_spring)
    cdf = np.cumsum([1.0 - p, 0.0, p])
    cdf /= cdf[-1]
    edges = np.empty((n_sims, n, n))
    x = np.empty((n_sims, 3, n))
    v = np.empty((n_sims, 3, n))
    noise = []
    for s in range(n_sims):  # the draws, in the protocol's order (rng.choice = searchsorted on uniforms)
        u = rng.random_sample((n, n))
        e = np.array([0.0, 0.5, 1.0])[cdf.searchsorted(u, side="right")]
        e = np.tril(e) + np.tril(e, -1).T
        np.fill_diagonal(e, 0.0)
        edges[s] = e
        x[s] = rng.randn(3, n) * cfg.loc_std
        v[s] = rng.randn(3, n)
        noise.append((rng.randn(T, 3, n), rng.randn(T, 3, n)) if cfg.noise_var else None)
        if not cfg.noise_var:
            rng.randn(T, 3, n), rng.randn(T, 3, n)
    v = v * cfg.vel_norm / np.sqrt((v**2).sum(axis=1))[:, None, :]
    for s in range(n_sims):
        _reflect_from_walls(x[s], v[s], cfg.box_size, "springs")
    pos, vel = np.empty((n_sims, T, n, 3)), np.empty((n_sims, T, n, 3))
    for start in range(0, n_sims, chunk):
        sl = slice(start, min(start + chunk, n_sims))
        k_e = -cfg.interaction_strength * edges[sl]
        loc, ve = _leapfrog(x[sl], v[sl], lambda y, k_e=k_e: _spring_forces(y, k_e, cfg), cfg)
        if cfg.noise_var:
            loc = loc + np.stack([a for a, _ in noise[sl]]) * cfg.noise_var
            ve = ve + np.stack([b for _, b in noise[sl]]) * cfg.noise_var
        pos[sl], vel[sl] = loc.transpose(0, 1, 3, 2), ve.transpose(0, 1, 3, 2)
    return SystemTrajectories(pos, vel, np.ones((n_sims, n)), edges)


def springs_energy(pos: np.ndarray, vel: np.ndarray, edges: np.ndarray, k: float = 0.1) -> np.ndarray:
    """``sum |v|^2 / 2 + k sum_{i<j} e_ij |x_i - x_j|^2 / 2`` for ``pos, vel (..., n, 3)``,
    ``edges (..., n, n)`` (broadcast over leading dims) -> ``(...)``."""
    d2 = ((pos[..., :, None, :] - pos[..., None, :, :]) ** 2).sum(-1)
    return 0.5 * (vel**2).sum((-1, -2)) + 0.25 * k * (edges * d2).sum((-1, -2))


# --------------------------------------------------------------------------- gravity
def _gravity_acc(x: np.ndarray, m: np.ndarray, cfg: GravityConfig) -> np.ndarray:
    """``x (..., n, 3)``, masses ``m (..., n)`` -> softened accelerations ``(..., n, 3)``."""
    d = x[..., None, :, :] - x[..., :, None, :]  # [i, j] = x_j - x_i
    r2 = (d[..., 0] ** 2 + d[..., 1] ** 2 + d[..., 2] ** 2) + cfg.softening**2
    inv_r3 = np.zeros_like(r2)
    pos_ = r2 > 0
    inv_r3[pos_] = r2[pos_] ** -1.5
    w = (inv_r3 * m[..., None, :])[..., None]  # (..., n, n, 1)
    return cfg.interaction_strength * (d * w).sum(axis=-2)


def _verlet(x, v, m, cfg: GravityConfig):
    x, v = x.copy(), v.copy()
    pos = np.zeros((*x.shape[:-2], cfg.n_frames, *x.shape[-2:]))
    vel = np.zeros_like(pos)
    acc = _gravity_acc(x, m, cfg)
    for i in range(cfg.steps):
        if i % cfg.sample_every == 0:
            pos[..., i // cfg.sample_every, :, :], vel[..., i // cfg.sample_every, :, :] = x, v
        v += acc * cfg.dt / 2.0
        x += v * cfg.dt
        acc = _gravity_acc(x, m, cfg)
        v += acc * cfg.dt / 2.0
    return pos, vel


def simulate_gravity_reference(rng: np.random.RandomState, config: GravityConfig | None = None):
    """One gravity simulation, step by step in the published ``(n, 3)`` layout. Returns
    ``pos, vel (T, n, 3)`` and ``mass (n,)``."""
    cfg = _check(config, GravityConfig, "simulate_gravity_reference")
    rng = _check_rng(rng, "simulate_gravity_reference")
    n = cfg.n_particles
    m = np.ones(n)
    x = rng.randn(n, 3)
    v = rng.randn(n, 3)
    v -= np.mean(m[:, None] * v, 0) / np.mean(m)
    pos, vel = _verlet(x, v, m, cfg)
    noise = [rng.randn(cfg.n_frames, n, 3) for _ in range(3)]
    if cfg.noise_var:
        pos, vel = pos + noise[0] * cfg.noise_var, vel + noise[1] * cfg.noise_var
    return pos, vel, m


def simulate_gravity(rng: np.random.RandomState, n_sims: int, config: GravityConfig | None = None,
                     *, chunk: int = 1000) -> SystemTrajectories:
    """``n_sims`` gravity simulations at once, bitwise equal to ``n_sims`` calls of
    :func:`simulate_gravity_reference` on the same stream.

    Example:
        >>> import numpy as np
        >>> t = simulate_gravity(np.random.RandomState(0), 2, GravityConfig(steps=200, sample_every=50))
        >>> t.pos.shape, bool(np.allclose(t.vel[:, 0].mean(axis=1), 0))
        ((2, 4, 5, 3), True)
    """
    where = "simulate_gravity"
    rng = _check_rng(rng, where)
    check_int(n_sims, "n_sims", where, minimum=0)
    cfg = _check(config, GravityConfig, where)
    n, T = cfg.n_particles, cfg.n_frames
    m = np.ones((n_sims, n))
    x, v = np.empty((n_sims, n, 3)), np.empty((n_sims, n, 3))
    noise = []
    for s in range(n_sims):
        x[s] = rng.randn(n, 3)
        v[s] = rng.randn(n, 3)
        v[s] -= np.mean(m[s][:, None] * v[s], 0) / np.mean(m[s])
        draws = [rng.randn(T, n, 3) for _ in range(3)]
        noise.append(draws[:2] if cfg.noise_var else None)
    pos, vel = np.empty((n_sims, T, n, 3)), np.empty((n_sims, T, n, 3))
    for start in range(0, n_sims, chunk):
        sl = slice(start, min(start + chunk, n_sims))
        p_, v_ = _verlet(x[sl], v[sl], m[sl], cfg)
        if cfg.noise_var:
            p_ = p_ + np.stack([a for a, _ in noise[sl]]) * cfg.noise_var
            v_ = v_ + np.stack([b for _, b in noise[sl]]) * cfg.noise_var
        pos[sl], vel[sl] = p_, v_
    return SystemTrajectories(pos, vel, m, m[:, :, None] * m[:, None, :])


def gravity_energy(pos: np.ndarray, vel: np.ndarray, mass: np.ndarray, g: float = 1.0,
                   softening: float = 0.1) -> np.ndarray:
    """The energy the softened integrator conserves: ``sum m |v|^2 / 2 - G sum_{i<j} m_i m_j /
    sqrt(|x_i - x_j|^2 + s^2)``; ``pos, vel (..., n, 3)``, ``mass (..., n)`` -> ``(...)``."""
    d2 = ((pos[..., :, None, :] - pos[..., None, :, :]) ** 2).sum(-1)
    n = pos.shape[-2]
    iu = np.triu_indices(n, 1)
    mm = mass[..., :, None] * mass[..., None, :]
    pot = -(g * mm / np.sqrt(d2 + softening**2))[..., iu[0], iu[1]].sum(-1)
    return 0.5 * (mass * (vel**2).sum(-1)).sum(-1) + pot


# --------------------------------------------------------------------------- generation + cache
_SIMULATE = {"springs": simulate_springs, "gravity": simulate_gravity}


def generate_system(config: SpringsConfig | GravityConfig) -> dict[str, SystemTrajectories]:
    """Train, val and test splits, in that order, from one stream seeded with ``config.seed``.

    Example:
        >>> out = generate_system(SpringsConfig(n_train=2, n_val=1, n_test=1, steps=200, sample_every=50))
        >>> {k: len(v) for k, v in out.items()}
        {'train': 2, 'val': 1, 'test': 1}
    """
    if not isinstance(config, (SpringsConfig, GravityConfig)):
        raise TypeError(f"generate_system: `config` must be a SpringsConfig or GravityConfig, "
                        f"got {type(config).__name__}")
    rng = np.random.RandomState(config.seed)
    return {s: _SIMULATE[config.system](rng, size, config) for s, size in config.split_sizes().items()}


def system_cache_folder(config: SpringsConfig | GravityConfig, root=None) -> Path:
    return data_dir(root) / "nbody" / f"{config.system}-{config.key()}"


def load_system(config: SpringsConfig | GravityConfig, *, root=None, regenerate: bool = False,
                progress: bool = True) -> dict[str, SystemTrajectories]:
    """The three splits from the cache when its manifest matches ``config``'s recipe and the
    file sizes, else generated and cached (``<data dir>/nbody/<system>-<key>/{split}.npz`` +
    ``manifest.json`` written last; atomic writes; the old manifest is removed first).

    Example:
        >>> import tempfile
        >>> cfg = GravityConfig(n_train=2, n_val=1, n_test=1, steps=200, sample_every=50)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     a = load_system(cfg, root=d, progress=False)
        ...     b = load_system(cfg, root=d, progress=False)  # from the cache
        >>> bool((a["train"].pos == b["train"].pos).all())
        True
    """
    if not isinstance(config, (SpringsConfig, GravityConfig)):
        raise TypeError(f"load_system: `config` must be a SpringsConfig or GravityConfig, got {type(config).__name__}")
    folder = system_cache_folder(config, root)
    manifest_path = folder / "manifest.json"
    manifest = read_manifest(manifest_path)
    if not regenerate and manifest is not None and manifest.get("recipe") == config.recipe() and all(
        (folder / f["file"]).is_file() and (folder / f["file"]).stat().st_size == f["bytes"]
        for f in manifest.get("files", {}).values()
    ) and set(manifest.get("files", {})) == set(SPLITS):
        return {s: SystemTrajectories(**load_arrays(folder / f"{s}.npz")) for s in SPLITS}
    t0 = time.perf_counter()
    splits = generate_system(config)
    _store_splits(folder, splits, config, time.perf_counter() - t0, config.system, progress)
    return splits


# --------------------------------------------------------------------------- trajectory windows
@dataclass(frozen=True)
class WindowBatch:
    """Windows of trajectories, dense: ``pos, vel (B, H, n, 3)`` the input frames (oldest
    first), ``target (B, K, n, 3)`` the future positions, ``node (B, n)``, ``pair (B, n, n)``,
    ``edge_index (2, n (n - 1))`` one complete graph (row-major pairs, ``j -> i``) and
    ``edge_attr (B, n (n - 1), 1)`` the pair values on its edges."""

    pos: torch.Tensor
    vel: torch.Tensor
    target: torch.Tensor
    node: torch.Tensor
    pair: torch.Tensor
    edge_index: torch.Tensor
    edge_attr: torch.Tensor


class TrajectoryWindows(torch.utils.data.Dataset):
    """Input window -> future frames, for trajectory models: item ``k`` is simulation ``s``
    from start frame ``t`` with inputs at frames ``t - (H - 1) stride, ..., t`` and targets at
    ``t + stride, ..., t + K stride``. All starts that fit (``stride`` apart by default) or the
    given ``starts``.

    Args:
        trajectories: :class:`SystemTrajectories` or the charged system's
            :class:`~equikit.data.nbody.NBodyTrajectories`.
        history: input frames ``H``.
        horizon: future frames ``K``.
        stride: frames between consecutive inputs/targets.
        starts: the frames ``t`` to use (``None``: every ``stride``-th frame that fits).
        dtype: floating dtype of the tensors.

    Example:
        >>> import numpy as np
        >>> traj = simulate_springs(np.random.RandomState(0), 2, SpringsConfig(steps=1000, sample_every=50))
        >>> ds = TrajectoryWindows(traj, history=3, horizon=2, stride=2)
        >>> b = ds.batch([0, 1])
        >>> len(ds), tuple(b.pos.shape), tuple(b.target.shape), tuple(b.edge_attr.shape)
        (12, (2, 3, 5, 3), (2, 2, 5, 3), (2, 20, 1))
    """

    def __init__(self, trajectories, history: int = 1, horizon: int = 1, stride: int = 1, starts=None,
                 dtype: torch.dtype = torch.float32) -> None:
        where = "TrajectoryWindows"
        if isinstance(trajectories, NBodyTrajectories):
            trajectories = SystemTrajectories.from_charged(trajectories)
        if not isinstance(trajectories, SystemTrajectories):
            raise TypeError(f"{where}: `trajectories` must be SystemTrajectories or NBodyTrajectories, "
                            f"got {type(trajectories).__name__}")
        for name, v in (("history", history), ("horizon", horizon), ("stride", stride)):
            check_int(v, name, where, minimum=1)
        T = trajectories.pos.shape[1]
        first, last = (history - 1) * stride, T - 1 - horizon * stride
        if last < first:
            raise ValueError(f"{where}: a window needs (history - 1 + horizon) * stride + 1 = "
                             f"{(history - 1 + horizon) * stride + 1} frames, the trajectories have {T}")
        starts = list(range(first, last + 1, stride)) if starts is None else [int(t) for t in starts]
        bad = [t for t in starts if not first <= t <= last]
        if bad:
            raise ValueError(f"{where}: `starts` must lie in [{first}, {last}] for this window, got {bad}")
        self.traj, self.history, self.horizon, self.stride = trajectories, history, horizon, stride
        self.starts, self.dtype = starts, dtype
        n = trajectories.pos.shape[2]
        self.edge_index = complete_edge_index(n)

    def __len__(self) -> int:
        return len(self.traj) * len(self.starts)

    def _index(self, k: int) -> tuple[int, int]:
        if not 0 <= k < len(self):
            raise IndexError(f"TrajectoryWindows: index {k} out of range for {len(self)} windows")
        return k // len(self.starts), self.starts[k % len(self.starts)]

    def batch(self, indices) -> WindowBatch:
        """The windows ``indices`` as one :class:`WindowBatch`."""
        sims, ts = zip(*(self._index(int(k)) for k in indices))
        sims, ts = np.asarray(sims), np.asarray(ts)
        h = ts[:, None] + self.stride * np.arange(-(self.history - 1), 1)[None, :]
        f = ts[:, None] + self.stride * np.arange(1, self.horizon + 1)[None, :]

        def take(a, frames):
            return torch.as_tensor(a[sims[:, None], frames], dtype=self.dtype)

        pair = torch.as_tensor(self.traj.pair[sims], dtype=self.dtype)
        src, dst = self.edge_index
        return WindowBatch(take(self.traj.pos, h), take(self.traj.vel, h), take(self.traj.pos, f),
                           torch.as_tensor(self.traj.node[sims], dtype=self.dtype), pair, self.edge_index,
                           pair[:, src, dst].unsqueeze(-1))

    def __getitem__(self, k: int) -> WindowBatch:
        return self.batch([k])
