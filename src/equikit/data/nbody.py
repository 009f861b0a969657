"""The charged n-body system of Kipf et al. (2018) as used by EGNN (Satorras et al. 2021), FA,
SEGNN and PONITA (DESIGN §6).

Protocol (``ChargedNBodyConfig()`` defaults): 5 particles with charges ``q = +-1`` (each +1
with probability 1/2); initial positions ``N(0, loc_std^2 = 1)`` per coordinate; initial
velocities Gaussian directions rescaled to speed 0.5; Coulomb forces without softening,
``F_i = sum_{j != i} q_i q_j (x_i - x_j) / |x_i - x_j|^3`` with ``|r|^2`` computed as
``|x_i|^2 + |x_j|^2 - 2 x_i.x_j``, every component clipped to ``+-100``; a leapfrog
(kick-drift) integrator with ``dt = 0.001`` for 5000 steps, saved every 100 steps, so 49
frames (frame ``k`` is the state after step ``100 (k + 1)``; the initial state is not saved).
Walls reflect only the initial positions (box +-5). Random draws, per simulation, from one
legacy numpy stream ``np.random.RandomState(43)``: charges (5 uniforms through
``choice``), positions ``randn(3, 5)``, velocities ``randn(3, 5)``, then two
``randn(49, 3, 5)`` observation-noise draws that are multiplied by ``noise_var = 0`` but
still advance the stream. 10000 train, 2000 val and 2000 test simulations are drawn in that
order. The learning task uses the first 3000 train simulations: input frame 30 (positions,
velocities, ``q_i q_j`` on the 20 directed edges), target positions at frame 40.

Two integrators: :func:`simulate_charged_reference` follows the protocol one simulation at a
time, a step per Python iteration, in the published ``(3, n)`` layout;
:func:`simulate_charged` runs a whole split at once (float64 numpy, ``(S, 3, n)`` layout).
Both perform the same IEEE operations in the same order on every element, so the vectorised
one reproduces the reference **bitwise** (tested on all 49 frames). One deliberate choice:
the dot products ``x_i.x_j`` in ``|r|^2`` are written as three products summed left to right
instead of a BLAS ``A @ A.T``, whose rounding depends on the BLAS kernel; the published
data therefore agrees with ours only to rounding, and (chaos) only on early frames.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from equikit._utils import check_int, check_positive
from equikit.data._cache import data_dir, load_arrays, read_manifest, save_arrays, write_manifest

GENERATOR_VERSION = 1
SPLITS = ("train", "val", "test")


# --------------------------------------------------------------------------- recipe
@dataclass(frozen=True)
class ChargedNBodyConfig:
    """The recipe of the charged n-body data; the defaults are the EGNN ``nbody_small``
    protocol (DESIGN §6). ``loc_std`` is the effective std: the published generator
    multiplies its argument by ``(n / 5) ** (1 / 3)``, which is 1 for 5 particles.

    Example:
        >>> from equikit.data.nbody import ChargedNBodyConfig
        >>> cfg = ChargedNBodyConfig()
        >>> cfg.n_frames, cfg.seed, cfg.n_train
        (49, 43, 10000)
    """

    n_particles: int = 5
    n_train: int = 10000
    n_val: int = 2000
    n_test: int = 2000
    steps: int = 5000
    sample_every: int = 100
    dt: float = 0.001
    loc_std: float = 1.0
    vel_norm: float = 0.5
    interaction_strength: float = 1.0
    max_force: float = 100.0
    box_size: float = 5.0
    p_positive: float = 0.5
    noise_var: float = 0.0
    seed: int = 43

    def __post_init__(self) -> None:
        where = "ChargedNBodyConfig"
        check_int(self.n_particles, "n_particles", where, minimum=2)
        for name in ("n_train", "n_val", "n_test"):
            check_int(getattr(self, name), name, where, minimum=0)
        check_int(self.steps, "steps", where, minimum=1)
        check_int(self.sample_every, "sample_every", where, minimum=1)
        check_int(self.seed, "seed", where, minimum=0)
        if self.steps % self.sample_every or self.steps // self.sample_every < 2:
            raise ValueError(
                f"{where}: `steps` must be a multiple of `sample_every` with at least 2 frames "
                f"(steps // sample_every >= 2), got steps={self.steps}, "
                f"sample_every={self.sample_every}"
            )
        for name in ("dt", "loc_std", "vel_norm", "interaction_strength", "max_force", "box_size"):
            check_positive(getattr(self, name), name, where)
        if not 0.0 <= float(self.p_positive) <= 1.0:
            raise ValueError(f"{where}: `p_positive` must be in [0, 1], got {self.p_positive}")
        if float(self.noise_var) < 0:
            raise ValueError(f"{where}: `noise_var` must be >= 0, got {self.noise_var}")

    @property
    def n_frames(self) -> int:
        """Saved frames per simulation: ``steps // sample_every - 1`` (49 for the protocol)."""
        return self.steps // self.sample_every - 1

    def split_sizes(self) -> dict[str, int]:
        return {"train": self.n_train, "val": self.n_val, "test": self.n_test}

    def recipe(self) -> dict:
        """Everything that determines the data, as JSON-ready values (written to the manifest)."""
        return {"system": "charged", "generator_version": GENERATOR_VERSION,
                "random_stream": "numpy.random.RandomState (legacy MT19937)",
                **dataclasses.asdict(self)}

    def key(self) -> str:
        """A short hash of :meth:`recipe`, used as the cache folder name."""
        text = json.dumps(self.recipe(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class NBodyTrajectories:
    """Simulated trajectories of one split (numpy float64).

    Shapes: ``pos``, ``vel``: ``(S, T, n, 3)``; ``charges``: ``(S, n)`` with values +-1.
    """

    pos: np.ndarray
    vel: np.ndarray
    charges: np.ndarray

    def __len__(self) -> int:
        return int(self.pos.shape[0])

    def head(self, k: int) -> NBodyTrajectories:
        return NBodyTrajectories(self.pos[:k], self.vel[:k], self.charges[:k])


def _check_rng(rng, where: str) -> np.random.RandomState:
    if not isinstance(rng, np.random.RandomState):
        raise TypeError(
            f"{where}: `rng` must be a numpy.random.RandomState (the legacy stream the protocol "
            f"uses, e.g. np.random.RandomState(43)), got {type(rng).__name__}"
        )
    return rng


def _check_config_type(config, cls: type, where: str):
    """``cls()`` for ``None``, ``config`` if it is a ``cls``, else TypeError naming ``where``."""
    if config is None:
        return cls()
    if not isinstance(config, cls):
        raise TypeError(f"{where}: `config` must be a {cls.__name__}, got {type(config).__name__}")
    return config


def _check_config(config, where: str) -> ChargedNBodyConfig:
    return _check_config_type(config, ChargedNBodyConfig, where)


# --------------------------------------------------------------------------- reference loop
def _reference_forces(x: np.ndarray, qq: np.ndarray, cfg: ChargedNBodyConfig) -> np.ndarray:
    """Forces ``(3, n)`` on one system at positions ``x (3, n)``, charge products ``qq (n, n)``."""
    n = x.shape[1]
    sq = (x[0] * x[0] + x[1] * x[1]) + x[2] * x[2]
    d2 = np.empty((n, n))
    for i in range(n):
        dot = (x[0, i] * x[0] + x[1, i] * x[1]) + x[2, i] * x[2]
        d2[i] = (sq[i] + sq) - 2.0 * dot
    with np.errstate(divide="ignore", invalid="ignore"):
        size = cfg.interaction_strength * qq / np.power(d2, 1.5)
    np.fill_diagonal(size, 0.0)  # no self force (the diagonal was 0/0 or q^2/0)
    force = np.zeros((3, n))
    for k in range(3):
        diff = np.subtract.outer(x[k], x[k])  # diff[i, j] = x_i - x_j: like charges repel
        force[k] = (size * diff).sum(axis=-1)
    return np.clip(force, -cfg.max_force, cfg.max_force)


def simulate_charged_reference(
    rng: np.random.RandomState, config: ChargedNBodyConfig | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Simulate ONE charged n-body system, step by step as the published protocol does.

    Slow (a Python iteration per step, ~0.1-0.6 s a simulation) and obviously in protocol
    order: the oracle that :func:`simulate_charged` is tested against. Advances ``rng`` by
    exactly the draws of one published simulation.

    Args:
        rng: the legacy numpy stream, e.g. ``np.random.RandomState(43)``.
        config: the recipe (default: the EGNN protocol).

    Returns:
        ``pos (T, n, 3)``, ``vel (T, n, 3)`` float64 and ``charges (n,)`` (+-1.0), with
        ``T = config.n_frames``.

    Example:
        >>> import numpy as np
        >>> from equikit.data.nbody import ChargedNBodyConfig, simulate_charged_reference
        >>> cfg = ChargedNBodyConfig(steps=200, sample_every=50)
        >>> pos, vel, q = simulate_charged_reference(np.random.RandomState(43), cfg)
        >>> pos.shape, vel.shape, sorted(set(q.tolist())) <= [-1.0, 1.0]
        ((3, 5, 3), (3, 5, 3), True)
    """
    where = "simulate_charged_reference"
    rng = _check_rng(rng, where)
    cfg = _check_config(config, where)
    n, n_frames = cfg.n_particles, cfg.n_frames
    p = float(cfg.p_positive)
    charges = rng.choice(np.array([-1.0, 0.0, 1.0]), size=(n, 1), p=[1.0 - p, 0.0, p])
    qq = charges.dot(charges.T)
    loc = np.zeros((n_frames, 3, n))
    vel = np.zeros((n_frames, 3, n))
    x = rng.randn(3, n) * cfg.loc_std
    v = rng.randn(3, n)
    speed = np.sqrt((v**2).sum(axis=0)).reshape(1, -1)
    v = v * cfg.vel_norm / speed
    _reflect_from_walls(x, v, cfg.box_size)
    v += cfg.dt * _reference_forces(x, qq, cfg)  # first kick
    frame = 0
    for step in range(1, cfg.steps):
        x += cfg.dt * v  # drift
        if step % cfg.sample_every == 0:
            loc[frame], vel[frame] = x, v
            frame += 1
        v += cfg.dt * _reference_forces(x, qq, cfg)  # kick
    # observation noise: drawn even when noise_var == 0, so the stream advances as published
    loc += rng.randn(n_frames, 3, n) * cfg.noise_var
    vel += rng.randn(n_frames, 3, n) * cfg.noise_var
    return loc.transpose(0, 2, 1).copy(), vel.transpose(0, 2, 1).copy(), charges[:, 0].copy()


def _reflect_from_walls(x: np.ndarray, v: np.ndarray, box: float, system: str = "charged n-body") -> None:
    """Elastic reflection at ``+-box`` (in place); the protocol applies it to the initial state
    only. Positions beyond ``3 box`` are a bug upstream (the published code asserts); the
    error names ``system``."""
    if np.any(np.abs(x) >= 3 * box):
        raise RuntimeError(f"{system}: an initial position lies beyond 3 * box = {3 * box}")
    over = x > box
    x[over] = 2 * box - x[over]
    v[over] = -np.abs(v[over])
    under = x < -box
    x[under] = -2 * box - x[under]
    v[under] = np.abs(v[under])


# --------------------------------------------------------------------------- vectorised
def _draw_initial(rng: np.random.RandomState, n_sims: int, cfg: ChargedNBodyConfig):
    """Initial conditions of ``n_sims`` simulations, drawn in the per-simulation order of the
    protocol (including the unused noise draws). Returns ``q (S, n)``, ``x, v (S, 3, n)``,
    ``noise_x, noise_v (S, T, 3, n)`` (``None`` when ``noise_var == 0``)."""
    n, n_frames = cfg.n_particles, cfg.n_frames
    q = np.empty((n_sims, n))
    x = np.empty((n_sims, 3, n))
    v = np.empty((n_sims, 3, n))
    noisy = cfg.noise_var != 0
    nx = np.empty((n_sims, n_frames, 3, n)) if noisy else None
    nv = np.empty((n_sims, n_frames, 3, n)) if noisy else None
    # rng.choice([-1, 0, 1], p=[1-p, 0, p]) is ``searchsorted(cumsum(p), u, 'right')`` on n
    # uniforms u; here cdf = [1-p, 1-p, 1], so the charge is -1 iff u < 1 - p
    cdf0 = np.cumsum([1.0 - float(cfg.p_positive), 0.0, float(cfg.p_positive)])
    cdf0 = cdf0 / cdf0[-1]
    for s in range(n_sims):
        u = rng.random_sample((n, 1))
        q[s] = np.where(u[:, 0] < cdf0[0], -1.0, 1.0)
        x[s] = rng.randn(3, n) * cfg.loc_std
        v[s] = rng.randn(3, n)
        a = rng.randn(n_frames, 3, n)
        b = rng.randn(n_frames, 3, n)
        if noisy:
            nx[s], nv[s] = a, b
    speed = np.sqrt((v**2).sum(axis=1))[:, None, :]
    v = v * cfg.vel_norm / speed
    for s in range(n_sims):
        _reflect_from_walls(x[s], v[s], cfg.box_size)
    return q, x, v, nx, nv


def _forces(x: np.ndarray, qq: np.ndarray, cfg: ChargedNBodyConfig) -> np.ndarray:
    """Forces ``(S, 3, n)`` for positions ``x (S, 3, n)`` and charge products ``qq (S, n, n)``;
    the same element-wise operations, in the same order, as :func:`_reference_forces`."""
    n = x.shape[-1]
    x0, x1, x2 = x[:, 0], x[:, 1], x[:, 2]
    sq = (x0 * x0 + x1 * x1) + x2 * x2  # (S, n)
    dot = (x0[:, :, None] * x0[:, None, :] + x1[:, :, None] * x1[:, None, :]) + (
        x2[:, :, None] * x2[:, None, :]
    )
    d2 = (sq[:, :, None] + sq[:, None, :]) - 2.0 * dot
    with np.errstate(divide="ignore", invalid="ignore"):
        size = cfg.interaction_strength * qq / np.power(d2, 1.5)
    idx = np.arange(n)
    size[:, idx, idx] = 0.0
    diff = x[:, :, :, None] - x[:, :, None, :]  # (S, 3, n, n): x_i - x_j
    force = (size[:, None] * diff).sum(axis=-1)
    return np.clip(force, -cfg.max_force, cfg.max_force, out=force)


def _integrate(q, x, v, cfg: ChargedNBodyConfig):
    """Leapfrog for a batch of systems; returns ``loc, vel (S, T, 3, n)``."""
    x, v = x.copy(), v.copy()
    qq = q[:, :, None] * q[:, None, :]
    loc = np.zeros((x.shape[0], cfg.n_frames, 3, x.shape[-1]))
    vel = np.zeros_like(loc)
    v += cfg.dt * _forces(x, qq, cfg)
    frame = 0
    for step in range(1, cfg.steps):
        x += cfg.dt * v
        if step % cfg.sample_every == 0:
            loc[:, frame], vel[:, frame] = x, v
            frame += 1
        v += cfg.dt * _forces(x, qq, cfg)
    return loc, vel


def simulate_charged(
    rng: np.random.RandomState,
    n_sims: int,
    config: ChargedNBodyConfig | None = None,
    *,
    chunk: int = 1000,
    progress: Callable[[int, int], None] | None = None,
) -> NBodyTrajectories:
    """Simulate ``n_sims`` charged systems at once (float64 numpy), reproducing
    :func:`simulate_charged_reference` called ``n_sims`` times on the same stream, bitwise.

    Initial conditions are drawn first, in the protocol's per-simulation order (the
    trajectory itself draws nothing), then systems are integrated ``chunk`` at a time.

    Args:
        rng: the legacy numpy stream; advanced exactly as by ``n_sims`` reference calls.
        n_sims: number of simulations ``S``.
        config: the recipe (default: the EGNN protocol).
        chunk: systems integrated together (memory ~ ``chunk * n^2 * 3 * 8`` bytes per array).
        progress: called as ``progress(done, n_sims)`` after each chunk.

    Returns:
        :class:`NBodyTrajectories` with ``pos, vel (S, T, n, 3)``, ``charges (S, n)``.

    Example:
        >>> import numpy as np
        >>> from equikit.data.nbody import ChargedNBodyConfig, simulate_charged
        >>> cfg = ChargedNBodyConfig(steps=200, sample_every=50)
        >>> traj = simulate_charged(np.random.RandomState(43), 4, cfg)
        >>> traj.pos.shape, traj.charges.shape
        ((4, 3, 5, 3), (4, 5))
    """
    where = "simulate_charged"
    rng = _check_rng(rng, where)
    check_int(n_sims, "n_sims", where, minimum=0)
    check_int(chunk, "chunk", where, minimum=1)
    cfg = _check_config(config, where)
    q, x, v, nx, nv = _draw_initial(rng, n_sims, cfg)
    n, T = cfg.n_particles, cfg.n_frames
    pos = np.empty((n_sims, T, n, 3))
    vel = np.empty((n_sims, T, n, 3))
    for start in range(0, n_sims, chunk):
        sl = slice(start, min(start + chunk, n_sims))
        loc_c, vel_c = _integrate(q[sl], x[sl], v[sl], cfg)
        if nx is not None:
            loc_c += nx[sl] * cfg.noise_var
            vel_c += nv[sl] * cfg.noise_var
        pos[sl] = loc_c.transpose(0, 1, 3, 2)
        vel[sl] = vel_c.transpose(0, 1, 3, 2)
        if progress is not None:
            progress(sl.stop, n_sims)
    return NBodyTrajectories(pos, vel, q)


def generate_charged_nbody(
    config: ChargedNBodyConfig | None = None, *, progress: bool = False, chunk: int = 1000
) -> dict[str, NBodyTrajectories]:
    """Generate the train, val and test splits, in that order, from one stream seeded with
    ``config.seed`` (no caching; see :func:`load_charged_nbody`).

    Example:
        >>> from equikit.data.nbody import ChargedNBodyConfig, generate_charged_nbody
        >>> cfg = ChargedNBodyConfig(n_train=3, n_val=2, n_test=1, steps=200, sample_every=50)
        >>> {k: len(v) for k, v in generate_charged_nbody(cfg).items()}
        {'train': 3, 'val': 2, 'test': 1}
    """
    cfg = _check_config(config, "generate_charged_nbody")
    rng = np.random.RandomState(cfg.seed)
    out = {}
    for split, size in cfg.split_sizes().items():
        t0 = time.perf_counter()
        report = _progress_printer(split, t0) if progress else None
        out[split] = simulate_charged(rng, size, cfg, chunk=chunk, progress=report)
    return out


def _progress_printer(split: str, t0: float) -> Callable[[int, int], None]:
    def report(done: int, total: int) -> None:
        dt = time.perf_counter() - t0
        print(f"charged n-body {split}: {done}/{total} simulations ({dt:.1f} s)", file=sys.stderr,
              flush=True)

    return report


# --------------------------------------------------------------------------- cache
def load_charged_nbody(
    config: ChargedNBodyConfig | None = None,
    *,
    root=None,
    regenerate: bool = False,
    progress: bool = True,
) -> dict[str, NBodyTrajectories]:
    """The three splits, from the cache when its manifest matches ``config``'s recipe, else
    generated (a few minutes for the protocol) and cached.

    Cache layout: ``<data dir>/nbody/charged-<config.key()>/{train,val,test}.npz`` and a
    ``manifest.json`` (recipe, seed, file sizes) written last; every file is written to a temp
    file and moved into place with ``os.replace``. The data dir is ``root``, else
    ``$EQUIKIT_DATA``, else the user cache dir (see :func:`equikit.data.data_dir`).

    Example:
        >>> import tempfile
        >>> from equikit.data.nbody import ChargedNBodyConfig, load_charged_nbody
        >>> cfg = ChargedNBodyConfig(n_train=2, n_val=1, n_test=1, steps=200, sample_every=50)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     splits = load_charged_nbody(cfg, root=d, progress=False)
        ...     again = load_charged_nbody(cfg, root=d, progress=False)  # read from the cache
        >>> bool((splits["val"].pos == again["val"].pos).all())
        True
    """
    cfg = _check_config(config, "load_charged_nbody")
    folder = cache_folder(cfg, root)
    manifest_path = folder / "manifest.json"
    if not regenerate and _cache_valid(folder, read_manifest(manifest_path), cfg):
        return {s: NBodyTrajectories(**load_arrays(folder / f"{s}.npz")) for s in SPLITS}
    t0 = time.perf_counter()
    splits = generate_charged_nbody(cfg, progress=progress)
    _store_splits(folder, splits, cfg, time.perf_counter() - t0, "charged n-body", progress)
    return splits


def _store_splits(folder: Path, splits: dict, cfg, seconds: float, label: str, progress: bool) -> None:
    """Cache ``splits`` (dataclasses of arrays) under ``folder``: the old manifest is removed
    first (it must not vouch for half-written files), each split is written atomically to
    ``<split>.npz`` (one array per field), then ``manifest.json`` (``cfg``'s recipe and seed,
    file sizes, ``seconds`` of generation) last."""
    manifest_path = folder / "manifest.json"
    if manifest_path.exists():
        manifest_path.unlink()
    files = {}
    for name, traj in splits.items():
        path = folder / f"{name}.npz"
        save_arrays(path, {f.name: getattr(traj, f.name) for f in dataclasses.fields(traj)})
        files[name] = {"file": path.name, "bytes": path.stat().st_size, "n_sims": len(traj)}
    write_manifest(manifest_path, {"recipe": cfg.recipe(), "seed": cfg.seed, "files": files,
                                   "generation_seconds": round(seconds, 2)})
    if progress:
        print(f"{label}: cached in {folder} ({seconds:.1f} s)", file=sys.stderr, flush=True)


def cache_folder(config: ChargedNBodyConfig | None = None, root=None) -> Path:
    """The cache folder of ``config``'s recipe under the data dir (not created here)."""
    cfg = _check_config(config, "cache_folder")
    return data_dir(root) / "nbody" / f"charged-{cfg.key()}"


def _cache_valid(folder: Path, manifest: dict | None, cfg: ChargedNBodyConfig) -> bool:
    if manifest is None or manifest.get("recipe") != cfg.recipe():
        return False
    for name in SPLITS:
        entry = manifest.get("files", {}).get(name)
        path = folder / f"{name}.npz"
        if entry is None or not path.exists() or path.stat().st_size != entry.get("bytes"):
            return False
    return True


# --------------------------------------------------------------------------- dataset
#: the EGNN ``nbody_small`` task: input frame, target frame, training simulations used
FRAME_IN, FRAME_OUT, PROTOCOL_TRAIN_SAMPLES = 30, 40, 3000


def complete_edge_index(n: int) -> torch.Tensor:
    """All ``n (n - 1)`` directed edges ``i -> j`` (``i != j``) of a complete graph, row-major
    in ``i`` (the published order), as ``edge_index (2, E)``.

    Example:
        >>> from equikit.data.nbody import complete_edge_index
        >>> complete_edge_index(3).tolist()
        [[0, 0, 1, 1, 2, 2], [1, 2, 0, 2, 0, 1]]
    """
    check_int(n, "n", "complete_edge_index", minimum=1)
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    keep = i != j
    return torch.stack([i[keep], j[keep]])


@dataclass
class NBodySample:
    """One input/target pair of the n-body task (a graph of ``n`` particles).

    Shapes: ``pos``, ``vel``, ``target``: ``(n, 3)``; ``charges``: ``(n, 1)``;
    ``edge_index``: ``(2, E)`` int64, messages ``edge_index[0] -> edge_index[1]``;
    ``edge_attr``: ``(E, 1)``, the charge product ``q_i q_j`` of each edge.
    """

    pos: torch.Tensor
    vel: torch.Tensor
    charges: torch.Tensor
    edge_index: torch.Tensor
    edge_attr: torch.Tensor
    target: torch.Tensor


@dataclass
class NBodyBatch:
    """Several :class:`NBodySample` graphs as one disjoint graph (see :func:`collate_nbody`).

    Shapes: node tensors ``(N, ...)`` with ``N`` the total number of particles; ``edge_index``
    ``(2, E)`` offset per graph; ``batch (N,)`` the graph of each node; ``num_graphs`` an int.
    """

    pos: torch.Tensor
    vel: torch.Tensor
    charges: torch.Tensor
    edge_index: torch.Tensor
    edge_attr: torch.Tensor
    target: torch.Tensor
    batch: torch.Tensor
    num_graphs: int

    def inputs(self) -> dict[str, torch.Tensor]:
        """The model inputs as a dict (``pos, vel, charges, edge_index, edge_attr``), the form
        the equivariance checker's actions move."""
        return {"pos": self.pos, "vel": self.vel, "charges": self.charges,
                "edge_index": self.edge_index, "edge_attr": self.edge_attr}

    def to(self, device=None, dtype: torch.dtype | None = None) -> NBodyBatch:
        """Move to ``device`` and cast the floating tensors to ``dtype``."""
        def move(t):
            return t.to(device=device, dtype=dtype if t.is_floating_point() else None)

        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return NBodyBatch(**{k: move(v) if isinstance(v, torch.Tensor) else v
                             for k, v in fields.items()})


def collate_nbody(samples: list[NBodySample]) -> NBodyBatch:
    """Batch graphs into one disjoint graph: node tensors concatenated, each graph's
    ``edge_index`` offset by the number of nodes before it, and a ``batch`` vector.
    Use as ``DataLoader(dataset, collate_fn=collate_nbody)``.

    Example:
        >>> import torch
        >>> from equikit.data.nbody import NBodySample, collate_nbody, complete_edge_index
        >>> def sample(n):
        ...     ei = complete_edge_index(n)
        ...     return NBodySample(torch.zeros(n, 3), torch.zeros(n, 3), torch.ones(n, 1), ei,
        ...                        torch.ones(ei.shape[1], 1), torch.zeros(n, 3))
        >>> b = collate_nbody([sample(2), sample(3)])
        >>> b.batch.tolist(), b.edge_index[:, :3].tolist(), b.num_graphs
        ([0, 0, 1, 1, 1], [[0, 1, 2], [1, 0, 3]], 2)
    """
    if not isinstance(samples, (list, tuple)) or not samples:
        raise ValueError(
            f"collate_nbody: `samples` must be a non-empty list of NBodySample, got "
            f"{type(samples).__name__} of length {len(samples) if hasattr(samples, '__len__') else '?'}"
        )
    for k, s in enumerate(samples):
        if not isinstance(s, NBodySample):
            raise TypeError(f"collate_nbody: samples[{k}] must be an NBodySample, got {type(s).__name__}")
    sizes = torch.tensor([s.pos.shape[0] for s in samples])
    offsets = torch.cumsum(sizes, 0) - sizes
    return NBodyBatch(
        pos=torch.cat([s.pos for s in samples]),
        vel=torch.cat([s.vel for s in samples]),
        charges=torch.cat([s.charges for s in samples]),
        edge_index=torch.cat([s.edge_index + int(o) for s, o in zip(samples, offsets)], dim=1),
        edge_attr=torch.cat([s.edge_attr for s in samples]),
        target=torch.cat([s.target for s in samples]),
        batch=torch.repeat_interleave(torch.arange(len(samples)), sizes),
        num_graphs=len(samples),
    )


class NBodyDataset(torch.utils.data.Dataset):
    """The n-body prediction task: from the state at ``frame_in`` predict the positions at
    ``frame_out`` (defaults: the EGNN protocol, frames 30 -> 40).

    Data comes from ``trajectories`` when given, else from :func:`load_charged_nbody`
    (cached; generated on first use). The protocol trains on the first
    ``PROTOCOL_TRAIN_SAMPLES = 3000`` train simulations: pass ``max_samples=3000``.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        max_samples: keep the first ``max_samples`` simulations (``None``: all).
        frame_in, frame_out: input and target frames.
        config, root: recipe and data dir for :func:`load_charged_nbody`.
        trajectories: use these instead of the cache.
        dtype: floating dtype of the samples (float32, as published, by default).

    Example:
        >>> from equikit.data.nbody import ChargedNBodyConfig, NBodyDataset, generate_charged_nbody
        >>> cfg = ChargedNBodyConfig(n_train=4, n_val=0, n_test=0, steps=600, sample_every=50)
        >>> traj = generate_charged_nbody(cfg)["train"]
        >>> ds = NBodyDataset(trajectories=traj, frame_in=5, frame_out=9)
        >>> s = ds[0]
        >>> len(ds), tuple(s.pos.shape), tuple(s.edge_index.shape), tuple(s.edge_attr.shape)
        (4, (5, 3), (2, 20), (20, 1))
    """

    def __init__(
        self,
        split: str = "train",
        *,
        max_samples: int | None = None,
        frame_in: int = FRAME_IN,
        frame_out: int = FRAME_OUT,
        config: ChargedNBodyConfig | None = None,
        root=None,
        trajectories: NBodyTrajectories | None = None,
        dtype: torch.dtype = torch.float32,
        progress: bool = True,
    ) -> None:
        where = "NBodyDataset"
        if split not in SPLITS:
            raise ValueError(f"{where}: `split` must be one of {SPLITS}, got {split!r}")
        if max_samples is not None:
            check_int(max_samples, "max_samples", where, minimum=1)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"{where}: `dtype` must be a floating torch.dtype, got {dtype!r}")
        if trajectories is None:
            trajectories = load_charged_nbody(config, root=root, progress=progress)[split]
        elif not isinstance(trajectories, NBodyTrajectories):
            raise TypeError(
                f"{where}: `trajectories` must be NBodyTrajectories or None, got "
                f"{type(trajectories).__name__}"
            )
        n_frames = trajectories.pos.shape[1]
        for name, f in (("frame_in", frame_in), ("frame_out", frame_out)):
            check_int(f, name, where, minimum=0)
            if f >= n_frames:
                raise ValueError(f"{where}: `{name}` must be < {n_frames} (the frames simulated), got {f}")
        traj = trajectories if max_samples is None else trajectories.head(max_samples)
        self.pos = torch.as_tensor(traj.pos[:, frame_in], dtype=dtype)
        self.vel = torch.as_tensor(traj.vel[:, frame_in], dtype=dtype)
        self.target = torch.as_tensor(traj.pos[:, frame_out], dtype=dtype)
        self.charges = torch.as_tensor(traj.charges, dtype=dtype).unsqueeze(-1)
        self.edge_index = complete_edge_index(traj.pos.shape[2])
        src, dst = self.edge_index
        self.edge_attr = (self.charges[:, src] * self.charges[:, dst])  # (S, E, 1)

    def __len__(self) -> int:
        return int(self.pos.shape[0])

    @classmethod
    def from_tensors(cls, pos: torch.Tensor, vel: torch.Tensor, target: torch.Tensor,
                     charges: torch.Tensor) -> NBodyDataset:
        """A dataset from the tensors another one stores (``ds.pos, ds.vel, ds.target,
        ds.charges``), e.g. saved with ``torch.save`` to carry the task without its trajectories.

        Args:
            pos, vel, target: ``(S, n, 3)`` states at ``frame_in`` and positions at ``frame_out``.
            charges: ``(S, n, 1)``.

        Example:
            >>> from equikit.data.nbody import ChargedNBodyConfig, NBodyDataset, generate_charged_nbody
            >>> cfg = ChargedNBodyConfig(n_train=3, n_val=0, n_test=0, steps=600, sample_every=50)
            >>> ds = NBodyDataset(trajectories=generate_charged_nbody(cfg)["train"], frame_in=5, frame_out=9)
            >>> copy = NBodyDataset.from_tensors(ds.pos, ds.vel, ds.target, ds.charges)
            >>> bool((copy.batch([2, 0]).edge_attr == ds.batch([2, 0]).edge_attr).all())
            True
        """
        where = "NBodyDataset.from_tensors"
        for name, t in (("pos", pos), ("vel", vel), ("target", target), ("charges", charges)):
            if not isinstance(t, torch.Tensor) or not t.is_floating_point():
                raise TypeError(f"{where}: `{name}` must be a floating tensor, got {type(t).__name__}")
        if pos.ndim != 3 or pos.shape[-1] != 3 or pos.shape[1] < 2:
            raise ValueError(f"{where}: `pos` must have shape (S, n >= 2, 3), got {tuple(pos.shape)}")
        for name, t, shape in (("vel", vel, pos.shape), ("target", target, pos.shape),
                               ("charges", charges, (*pos.shape[:2], 1))):
            if tuple(t.shape) != tuple(shape):
                raise ValueError(f"{where}: `{name}` must have shape {tuple(shape)} (from `pos`), got {tuple(t.shape)}")
        self = cls.__new__(cls)
        self.pos, self.vel, self.target, self.charges = pos, vel, target, charges
        self.edge_index = complete_edge_index(pos.shape[1]).to(pos.device)
        src, dst = self.edge_index
        self.edge_attr = charges[:, src] * charges[:, dst]
        return self

    def to(self, device) -> NBodyDataset:
        """Move the stored tensors to ``device`` (in place; returns ``self``): batches are then
        indexed on the device, with no host-to-device copy per step.

        Example:
            >>> from equikit.data.nbody import ChargedNBodyConfig, NBodyDataset, generate_charged_nbody
            >>> cfg = ChargedNBodyConfig(n_train=2, n_val=0, n_test=0, steps=600, sample_every=50)
            >>> ds = NBodyDataset(trajectories=generate_charged_nbody(cfg)["train"], frame_in=5, frame_out=9)
            >>> ds.to("cpu").batch([1]).pos.device.type
            'cpu'
        """
        device = torch.device(device)
        for name in ("pos", "vel", "target", "charges", "edge_index", "edge_attr"):
            setattr(self, name, getattr(self, name).to(device))
        self.__dict__.pop("_batch_graphs", None)
        return self

    def __getitem__(self, i: int) -> NBodySample:
        return NBodySample(self.pos[i], self.vel[i], self.charges[i], self.edge_index,
                           self.edge_attr[i], self.target[i])

    def batch(self, indices) -> NBodyBatch:
        """The samples ``indices`` as one :class:`NBodyBatch`, equal to
        ``collate_nbody([self[i] for i in indices])`` but indexed from the stored tensors in one
        go (no per-sample Python loop); the offset ``edge_index`` and ``batch`` vector of each
        batch size are built once and reused.

        Args:
            indices: ``(B,)`` int64 tensor (or a sequence of ints), ``B >= 1``.

        Example:
            >>> from equikit.data.nbody import ChargedNBodyConfig, NBodyDataset, generate_charged_nbody
            >>> cfg = ChargedNBodyConfig(n_train=4, n_val=0, n_test=0, steps=600, sample_every=50)
            >>> ds = NBodyDataset(trajectories=generate_charged_nbody(cfg)["train"], frame_in=5, frame_out=9)
            >>> b = ds.batch([2, 0])
            >>> b.num_graphs, tuple(b.pos.shape), tuple(b.edge_index.shape), b.batch.tolist()[4:6]
            (2, (10, 3), (2, 40), [0, 1])
        """
        idx = torch.as_tensor(indices)
        if idx.ndim != 1 or idx.numel() == 0 or idx.dtype.is_floating_point or idx.dtype == torch.bool:
            raise ValueError(
                f"NBodyDataset.batch: `indices` must be a non-empty 1-d sequence of ints, got "
                f"{idx.dtype} of shape {tuple(idx.shape)}"
            )
        n_graphs, n, dev = int(idx.numel()), self.pos.shape[1], self.pos.device
        idx = idx.to(dev)
        cache = self.__dict__.setdefault("_batch_graphs", {})
        if n_graphs not in cache:
            e = self.edge_index.shape[1]
            offsets = (torch.arange(n_graphs, device=dev) * n).repeat_interleave(e)
            cache[n_graphs] = (self.edge_index.repeat(1, n_graphs) + offsets,
                               torch.arange(n_graphs, device=dev).repeat_interleave(n))
        edge_index, batch = cache[n_graphs]
        return NBodyBatch(
            pos=self.pos[idx].reshape(-1, 3), vel=self.vel[idx].reshape(-1, 3),
            charges=self.charges[idx].reshape(-1, 1), edge_index=edge_index,
            edge_attr=self.edge_attr[idx].reshape(-1, self.edge_attr.shape[-1]),
            target=self.target[idx].reshape(-1, 3), batch=batch, num_graphs=n_graphs,
        )
