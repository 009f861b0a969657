"""Springs and gravity systems: vectorised generators equal the reference loops bitwise and
advance the stream identically; energy conservation; reproducibility by seed; shapes; cache
with manifest; trajectory windows."""

import json

import numpy as np
import pytest
import torch

from equikit.data.nbody import ChargedNBodyConfig, generate_charged_nbody
from equikit.data.nbody_systems import (
    GravityConfig,
    SpringsConfig,
    SystemTrajectories,
    TrajectoryWindows,
    generate_system,
    gravity_energy,
    load_system,
    simulate_gravity,
    simulate_gravity_reference,
    simulate_springs,
    simulate_springs_reference,
    springs_energy,
    system_cache_folder,
)

SMALL_SPRINGS = SpringsConfig(steps=1000, sample_every=100)
SMALL_GRAVITY = GravityConfig(steps=1000, sample_every=100)


def test_springs_vectorised_equals_reference_bitwise():
    rng = np.random.RandomState(1)
    refs = [simulate_springs_reference(rng, SMALL_SPRINGS) for _ in range(3)]
    after_ref = rng.random_sample()
    rng2 = np.random.RandomState(1)
    traj = simulate_springs(rng2, 3, SMALL_SPRINGS, chunk=2)
    assert rng2.random_sample() == after_ref  # the stream advanced by exactly the same draws
    for s, (loc, vel, edges) in enumerate(refs):
        assert np.array_equal(traj.pos[s], loc.transpose(0, 2, 1))
        assert np.array_equal(traj.vel[s], vel.transpose(0, 2, 1))
        assert np.array_equal(traj.pair[s], edges)


def test_gravity_vectorised_equals_reference_bitwise():
    rng = np.random.RandomState(1)
    refs = [simulate_gravity_reference(rng, SMALL_GRAVITY) for _ in range(3)]
    after_ref = rng.random_sample()
    rng2 = np.random.RandomState(1)
    traj = simulate_gravity(rng2, 3, SMALL_GRAVITY, chunk=2)
    assert rng2.random_sample() == after_ref
    for s, (pos, vel, mass) in enumerate(refs):
        assert np.array_equal(traj.pos[s], pos) and np.array_equal(traj.vel[s], vel)
        assert np.array_equal(traj.node[s], mass)


def test_springs_structure_and_initial_state():
    traj = simulate_springs(np.random.RandomState(0), 40, SMALL_SPRINGS)
    e = traj.pair
    assert np.array_equal(e, e.transpose(0, 2, 1)) and (np.diagonal(e, axis1=1, axis2=2) == 0).all()
    assert set(np.unique(e)) <= {0.0, 1.0}
    frac = e[:, np.triu_indices(5, 1)[0], np.triu_indices(5, 1)[1]].mean()
    assert 0.4 < frac < 0.6  # p = 1/2 over 400 pairs (5 sigma ~ 0.125)
    assert traj.pos.shape == (40, 9, 5, 3) and SMALL_SPRINGS.n_frames == 9


def test_gravity_structure():
    traj = simulate_gravity(np.random.RandomState(0), 4, SMALL_GRAVITY)
    assert traj.pos.shape == (4, 10, 5, 3) and SMALL_GRAVITY.n_frames == 10
    assert np.allclose(traj.vel[:, 0].mean(axis=1), 0.0, atol=1e-12)  # centre-of-mass frame
    assert np.allclose(traj.vel.mean(axis=2), 0.0, atol=1e-10)  # momentum is conserved
    rng = np.random.RandomState(0)
    x0 = rng.randn(5, 3)
    assert np.array_equal(traj.pos[0, 0], x0)  # frame 0 is the initial state


def test_energy_is_conserved_over_full_protocol_trajectories():
    """Springs: leapfrog with velocities half a step behind the positions, so the measured
    energy wobbles by O(dt): measured max relative deviation 5e-4 over 200 simulations; bound
    2e-3. Gravity (softened potential): median max deviation 2.6e-5, 90th percentile 3e-4,
    worst 1.6e-2 (close encounters) over 200 simulations; bounds on median and 90th percentile."""
    s = simulate_springs(np.random.RandomState(0), 10, SpringsConfig())
    energy = springs_energy(s.pos, s.vel, s.pair[:, None])
    assert (np.abs(energy - energy[:, :1]) / energy[:, :1]).max() < 2e-3
    g = simulate_gravity(np.random.RandomState(0), 20, GravityConfig())
    energy = gravity_energy(g.pos, g.vel, g.node[:, None])
    rel = (np.abs(energy - energy[:, :1]) / np.abs(energy[:, :1])).max(axis=1)
    assert np.median(rel) < 1e-4 and np.percentile(rel, 90) < 2e-3


def test_energy_functions_detect_a_broken_trajectory():
    """The conservation test can fail: scaling velocities half way changes the energy."""
    s = simulate_springs(np.random.RandomState(0), 3, SMALL_SPRINGS)
    vel = s.vel.copy()
    vel[:, 5:] *= 1.1
    energy = springs_energy(s.pos, vel, s.pair[:, None])
    assert (np.abs(energy - energy[:, :1]) / energy[:, :1]).max() > 1e-2


@pytest.mark.parametrize("cfg", [SpringsConfig(n_train=2, n_val=1, n_test=1, steps=300, sample_every=100),
                                 GravityConfig(n_train=2, n_val=1, n_test=1, steps=300, sample_every=100)])
def test_reproducible_by_seed_and_cached_with_manifest(cfg, tmp_path):
    a, b = generate_system(cfg), generate_system(cfg)
    assert all(np.array_equal(a[k].pos, b[k].pos) for k in a)
    other = generate_system(type(cfg)(**{**cfg.__dict__, "seed": cfg.seed + 1}))
    assert not np.array_equal(a["train"].pos, other["train"].pos)
    first = load_system(cfg, root=tmp_path, progress=False)
    folder = system_cache_folder(cfg, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["recipe"]["system"] == cfg.system and manifest["files"]["train"]["n_sims"] == 2
    (folder / "train.npz").write_bytes((folder / "train.npz").read_bytes() + b"x")  # corrupt: size differs
    again = load_system(cfg, root=tmp_path, progress=False)  # regenerated
    assert np.array_equal(first["val"].pos, again["val"].pos) and np.array_equal(first["train"].pos, a["train"].pos)


def test_windows_match_the_trajectories():
    traj = simulate_springs(np.random.RandomState(0), 3, SpringsConfig(steps=1000, sample_every=50))  # 19 frames
    ds = TrajectoryWindows(traj, history=3, horizon=2, stride=2, dtype=torch.float64)
    assert ds.starts == list(range(4, 15, 2)) and len(ds) == 3 * 6
    b = ds.batch([7])  # simulation 1, start 6
    assert torch.equal(b.pos[0], torch.as_tensor(traj.pos[1, [2, 4, 6]]))
    assert torch.equal(b.vel[0], torch.as_tensor(traj.vel[1, [2, 4, 6]]))
    assert torch.equal(b.target[0], torch.as_tensor(traj.pos[1, [8, 10]]))
    src, dst = b.edge_index
    assert torch.equal(b.edge_attr[0, :, 0], torch.as_tensor(traj.pair[1])[src, dst])


def test_windows_of_the_charged_system_and_errors():
    charged = generate_charged_nbody(ChargedNBodyConfig(n_train=2, n_val=0, n_test=0, steps=600,
                                                        sample_every=100))["train"]
    ds = TrajectoryWindows(charged, history=2, horizon=1, starts=[1, 3])
    b = ds.batch(range(len(ds)))
    assert b.pos.shape == (4, 2, 5, 3) and torch.equal(b.node, torch.as_tensor(charged.charges, dtype=torch.float32)
                                                       .repeat_interleave(2, 0))
    assert isinstance(SystemTrajectories.from_charged(charged), SystemTrajectories)
    with pytest.raises(ValueError, match="needs"):
        TrajectoryWindows(charged, history=4, horizon=3)
    with pytest.raises(ValueError, match="starts"):
        TrajectoryWindows(charged, history=2, horizon=1, starts=[0])
    with pytest.raises(TypeError, match="trajectories"):
        TrajectoryWindows(charged.pos)
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_bad_recipes_and_arguments():
    with pytest.raises(ValueError, match="sample_every"):
        SpringsConfig(steps=1000, sample_every=300)
    with pytest.raises(ValueError, match="p_spring"):
        SpringsConfig(p_spring=1.5)
    with pytest.raises(ValueError, match="softening"):
        GravityConfig(softening=-1.0)
    with pytest.raises(TypeError, match="RandomState"):
        simulate_springs(np.random.default_rng(0), 2)
    with pytest.raises(TypeError, match="GravityConfig"):
        simulate_gravity(np.random.RandomState(0), 2, SpringsConfig())
    with pytest.raises(TypeError, match="SpringsConfig or GravityConfig"):
        generate_system(ChargedNBodyConfig())
