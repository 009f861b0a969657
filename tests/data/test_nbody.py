"""Charged n-body data: the vectorised generator against the step-by-step reference, the
physics of the force law, the random-stream order, the cache and the dataset."""

import json
import os

import numpy as np
import pytest
import torch

from equikit.data import nbody
from equikit.data.nbody import (
    ChargedNBodyConfig,
    NBodyDataset,
    NBodySample,
    collate_nbody,
    complete_edge_index,
    generate_charged_nbody,
    load_charged_nbody,
    simulate_charged,
    simulate_charged_reference,
)

PROTOCOL = ChargedNBodyConfig()
SMALL = ChargedNBodyConfig(n_train=3, n_val=2, n_test=2, steps=1000, sample_every=50)


# --------------------------------------------------------------------------- reproduction
def test_vectorised_reproduces_reference_bitwise_on_the_protocol():
    """Full protocol (5000 steps, 49 frames) on the first 3 simulations of seed 43: every
    frame bitwise equal. Bitwise is possible because both perform the same IEEE float64
    operations in the same order per element; chaos would amplify any 1-ulp difference (see
    the next test), so a tolerance check would hide real discrepancies on late frames."""
    rng = np.random.RandomState(PROTOCOL.seed)
    refs = [simulate_charged_reference(rng, PROTOCOL) for _ in range(3)]
    traj = simulate_charged(np.random.RandomState(PROTOCOL.seed), 3, PROTOCOL, chunk=2)
    assert traj.pos.shape == (3, 49, 5, 3)
    for s, (pos, vel, q) in enumerate(refs):
        np.testing.assert_array_equal(traj.pos[s], pos)
        np.testing.assert_array_equal(traj.vel[s], vel)
        np.testing.assert_array_equal(traj.charges[s], q)
    # the two streams were advanced by the same number of draws
    rng2 = np.random.RandomState(PROTOCOL.seed)
    simulate_charged(rng2, 3, PROTOCOL)
    assert rng.random_sample() == rng2.random_sample()


def test_chaos_a_one_ulp_change_grows_so_only_early_frames_agree_to_rounding():
    """Why reproduction must be bitwise (or is only meaningful on early frames): perturb one
    initial coordinate by ~1 ulp and the trajectories separate by orders of magnitude."""
    cfg = PROTOCOL
    rng = np.random.RandomState(cfg.seed)
    q, x, v, _, _ = nbody._draw_initial(rng, 8, cfg)
    x2 = x.copy()
    x2[:, 0, 0] = np.nextafter(x2[:, 0, 0], np.inf)
    a, _ = nbody._integrate(q, x, v, cfg)
    b, _ = nbody._integrate(q, x2, v, cfg)
    err = np.abs(a - b).max(axis=(0, 2, 3))  # per frame, over sims
    assert err[0] < 1e-13  # early frames: rounding level
    assert err[-1] > 1e3 * max(err[0], 1e-16)  # late frames: grown by orders of magnitude


def test_splits_come_from_one_stream_in_train_val_test_order():
    rng = np.random.RandomState(SMALL.seed)
    splits = generate_charged_nbody(SMALL)
    for name in ("train", "val", "test"):
        for s in range(len(splits[name])):
            pos, vel, q = simulate_charged_reference(rng, SMALL)
            np.testing.assert_array_equal(splits[name].pos[s], pos)
            np.testing.assert_array_equal(splits[name].vel[s], vel)
            np.testing.assert_array_equal(splits[name].charges[s], q)


def test_noise_draws_advance_the_stream_even_at_zero_noise():
    """The published generator draws observation noise (times noise_var = 0) after each
    simulation; skipping those draws would give a different second simulation."""
    rng = np.random.RandomState(43)
    simulate_charged_reference(rng, SMALL)
    expected_after = np.random.RandomState(43)
    n, T = SMALL.n_particles, SMALL.n_frames
    expected_after.random_sample((n, 1))
    for shape in [(3, n), (3, n), (T, 3, n), (T, 3, n)]:
        expected_after.randn(*shape)
    assert rng.random_sample() == expected_after.random_sample()


def test_nonzero_noise_matches_reference():
    cfg = ChargedNBodyConfig(n_train=2, n_val=0, n_test=0, steps=300, sample_every=50, noise_var=0.1)
    rng = np.random.RandomState(1)
    refs = [simulate_charged_reference(rng, cfg) for _ in range(2)]
    traj = simulate_charged(np.random.RandomState(1), 2, cfg)
    for s in range(2):
        np.testing.assert_array_equal(traj.pos[s], refs[s][0])


# --------------------------------------------------------------------------- physics
def _coulomb_forces_autograd(x: np.ndarray, q: np.ndarray) -> np.ndarray:
    """-grad of U = sum_{i<j} q_i q_j / |x_i - x_j|, independently of the generator."""
    xt = torch.tensor(x, requires_grad=True)
    qt = torch.tensor(q)
    i, j = torch.triu_indices(len(q), len(q), 1)
    u = (qt[i] * qt[j] / (xt[i] - xt[j]).norm(dim=-1)).sum()
    (g,) = torch.autograd.grad(u, xt)
    return -g.numpy()


@pytest.mark.parametrize("seed", range(5))
def test_force_law_is_unsoftened_coulomb_with_component_clipping(seed):
    gen = np.random.default_rng(seed)
    x = gen.normal(size=(5, 3)) * 2
    q = gen.choice([-1.0, 1.0], size=5)
    expected = _coulomb_forces_autograd(x, q)
    got = nbody._forces(x.T[None].copy(), (q[:, None] * q[None, :])[None], PROTOCOL)[0].T
    clipped = np.clip(expected, -100, 100)
    np.testing.assert_allclose(got, clipped, rtol=1e-9, atol=1e-9)


def test_close_pair_force_is_clipped_at_100_and_like_charges_repel():
    x = np.array([[0.0, 0.0, 0.0], [0.01, 0.0, 0.0], [5, 5, 5], [-5, 5, 5], [5, -5, 5]])
    q = np.array([1.0, 1.0, 1.0, -1.0, 1.0])
    f = nbody._forces(x.T[None].copy(), (q[:, None] * q[None, :])[None], PROTOCOL)[0].T
    assert f[0, 0] == -100.0 and f[1, 0] == 100.0  # 1/r^2 = 1e4, clipped; pushed apart
    assert np.abs(f).max() <= 100.0


def test_initial_conditions_follow_the_protocol():
    q, x, v, nx, _ = nbody._draw_initial(np.random.RandomState(0), 2000, PROTOCOL)
    assert nx is None
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 0.5, rtol=1e-12)
    assert set(np.unique(q)) == {-1.0, 1.0}
    assert abs((q > 0).mean() - 0.5) < 0.02  # 10000 draws: 5 sigma = 0.025
    assert abs(x.std() - 1.0) < 0.02 and abs(x.mean()) < 0.02
    assert np.abs(x).max() <= PROTOCOL.box_size  # walls reflect the initial positions


def test_energy_is_nearly_conserved_when_clipping_is_inactive():
    """Leapfrog with dt = 1e-3: total energy (kinetic at the saved half-step velocity plus
    Coulomb potential) drifts little over the first frames of well-separated systems."""
    cfg = ChargedNBodyConfig(steps=1000, sample_every=100)
    traj = simulate_charged(np.random.RandomState(5), 20, cfg)
    i, j = np.triu_indices(5, 1)
    checked = 0
    for s in range(20):
        r = np.linalg.norm(traj.pos[s][:, i] - traj.pos[s][:, j], axis=-1)  # (T, pairs)
        if r.min() < 0.3:
            continue  # close encounters may hit the force clip, which breaks conservation
        u = (traj.charges[s][i] * traj.charges[s][j] / r).sum(-1)
        e = 0.5 * (traj.vel[s] ** 2).sum((-1, -2)) + u
        assert np.abs(e - e[0]).max() < 1e-2 * (1 + np.abs(e[0]))
        checked += 1
    assert checked >= 5  # seed 5: 10 of the 20 systems stay separated


def test_reflect_from_walls():
    x = np.array([[6.0, -7.0, 1.0]])
    v = np.array([[1.0, -1.0, 1.0]])
    nbody._reflect_from_walls(x, v, 5.0)
    np.testing.assert_array_equal(x, [[4.0, -3.0, 1.0]])
    np.testing.assert_array_equal(v, [[-1.0, 1.0, 1.0]])


# --------------------------------------------------------------------------- cache
def test_cache_roundtrip_manifest_and_no_regeneration(tmp_path, monkeypatch):
    first = load_charged_nbody(SMALL, root=tmp_path, progress=False)
    folder = nbody.cache_folder(SMALL, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["recipe"] == SMALL.recipe() and manifest["seed"] == 43
    assert sorted(os.listdir(folder)) == ["manifest.json", "test.npz", "train.npz", "val.npz"]

    def boom(*a, **k):
        raise AssertionError("regenerated although the cache is valid")

    monkeypatch.setattr(nbody, "generate_charged_nbody", boom)
    again = load_charged_nbody(SMALL, root=tmp_path, progress=False)
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(first[name].pos, again[name].pos)
        np.testing.assert_array_equal(first[name].charges, again[name].charges)


def test_cache_regenerates_when_manifest_differs_or_file_is_truncated(tmp_path, monkeypatch):
    load_charged_nbody(SMALL, root=tmp_path, progress=False)
    folder = nbody.cache_folder(SMALL, tmp_path)
    calls = []
    real = nbody.generate_charged_nbody

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(nbody, "generate_charged_nbody", counting)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["recipe"]["seed"] = 42
    (folder / "manifest.json").write_text(json.dumps(manifest))
    load_charged_nbody(SMALL, root=tmp_path, progress=False)
    assert len(calls) == 1
    assert json.loads((folder / "manifest.json").read_text())["recipe"] == SMALL.recipe()
    with open(folder / "val.npz", "r+b") as f:
        f.truncate(100)
    load_charged_nbody(SMALL, root=tmp_path, progress=False)
    assert len(calls) == 2
    load_charged_nbody(SMALL, root=tmp_path, progress=False)
    assert len(calls) == 2


def test_data_dir_env_var_and_progress_output(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EQUIKIT_DATA", str(tmp_path / "env"))
    load_charged_nbody(SMALL, progress=True)
    assert (tmp_path / "env" / "nbody" / f"charged-{SMALL.key()}" / "manifest.json").exists()
    err = capsys.readouterr().err
    assert "train: 3/3 simulations" in err and "cached in" in err
    monkeypatch.delenv("EQUIKIT_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert nbody.data_dir() == tmp_path / "xdg" / "equikit" / "data"


def test_recipe_key_changes_with_every_field():
    keys = {ChargedNBodyConfig().key(), ChargedNBodyConfig(seed=42).key(),
            ChargedNBodyConfig(dt=0.002).key(), ChargedNBodyConfig(n_train=5).key()}
    assert len(keys) == 4


# --------------------------------------------------------------------------- dataset
def test_dataset_samples_and_collate():
    traj = generate_charged_nbody(SMALL)["train"]
    ds = NBodyDataset(trajectories=traj, frame_in=5, frame_out=9, max_samples=2, dtype=torch.float64)
    assert len(ds) == 2
    s = ds[1]
    assert isinstance(s, NBodySample)
    np.testing.assert_array_equal(s.pos.numpy(), traj.pos[1, 5])
    np.testing.assert_array_equal(s.vel.numpy(), traj.vel[1, 5])
    np.testing.assert_array_equal(s.target.numpy(), traj.pos[1, 9])
    src, dst = s.edge_index
    assert s.edge_index.shape == (2, 20) and bool((src != dst).all())
    assert len({(int(a), int(b)) for a, b in zip(src, dst)}) == 20
    np.testing.assert_array_equal(s.edge_attr[:, 0].numpy(), traj.charges[1][src] * traj.charges[1][dst])

    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate_nbody)
    b = next(iter(loader))
    assert b.num_graphs == 2 and b.pos.shape == (10, 3)
    assert b.batch.tolist() == [0] * 5 + [1] * 5
    # graph 1's edges point at its own nodes 5..9 with its own charges
    e1 = b.edge_index[:, 20:]
    assert int(e1.min()) == 5 and int(e1.max()) == 9
    np.testing.assert_array_equal(b.edge_attr[20:, 0].numpy(),
                                  b.charges[e1[0], 0].numpy() * b.charges[e1[1], 0].numpy())
    assert b.to(dtype=torch.float32).pos.dtype == torch.float32
    assert b.to(dtype=torch.float32).edge_index.dtype == torch.int64


def test_dataset_defaults_to_protocol_frames_and_float32():
    cfg = ChargedNBodyConfig(n_train=2, n_val=0, n_test=0)
    traj = simulate_charged(np.random.RandomState(43), 2, cfg)
    ds = NBodyDataset(trajectories=traj)
    assert ds[0].pos.dtype == torch.float32
    np.testing.assert_allclose(ds[0].pos.numpy(), traj.pos[0, 30], rtol=1e-7)
    np.testing.assert_allclose(ds[0].target.numpy(), traj.pos[0, 40], rtol=1e-7)


def test_complete_edge_index_matches_published_order():
    assert complete_edge_index(3).tolist() == [[0, 0, 1, 1, 2, 2], [1, 2, 0, 2, 0, 1]]


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("call", "exc", "words"),
    [
        (lambda: ChargedNBodyConfig(steps=1000, sample_every=300), ValueError, "multiple of"),
        (lambda: ChargedNBodyConfig(dt=0.0), ValueError, "`dt`"),
        (lambda: ChargedNBodyConfig(n_particles=1.5), TypeError, "n_particles"),
        (lambda: ChargedNBodyConfig(p_positive=2.0), ValueError, "p_positive"),
        (lambda: simulate_charged(np.random.default_rng(0), 2), TypeError, "RandomState"),
        (lambda: simulate_charged(np.random.RandomState(0), -1), ValueError, "n_sims"),
        (lambda: simulate_charged_reference(np.random.RandomState(0), {"dt": 1}), TypeError, "config"),
        (lambda: NBodyDataset("training", trajectories=None), ValueError, "split"),
        (lambda: NBodyDataset(trajectories="x"), TypeError, "trajectories"),
        (lambda: collate_nbody([]), ValueError, "non-empty"),
        (lambda: collate_nbody([1]), TypeError, "NBodySample"),
        (lambda: nbody.data_dir(3), TypeError, "root"),
    ],
)
def test_bad_input_names_function_and_argument(call, exc, words):
    with pytest.raises(exc, match=words):
        call()


def test_dataset_frame_out_of_range():
    traj = generate_charged_nbody(SMALL)["val"]
    with pytest.raises(ValueError, match=r"NBodyDataset: `frame_out` must be < 19"):
        NBodyDataset(trajectories=traj, frame_in=0, frame_out=19)


@pytest.mark.slow
def test_full_protocol_generation_and_cache(tmp_path):
    """All 14000 simulations (a few minutes on 2 cores); the first of each split equals the
    reference after the stream has been advanced through the earlier splits."""
    splits = load_charged_nbody(root=tmp_path, progress=False)
    assert {k: len(v) for k, v in splits.items()} == {"train": 10000, "val": 2000, "test": 2000}
    assert np.isfinite(splits["train"].pos).all()
    rng = np.random.RandomState(43)
    nbody._draw_initial(rng, 10000, PROTOCOL)  # skip the train draws
    pos, _, _ = simulate_charged_reference(rng, PROTOCOL)
    np.testing.assert_array_equal(splits["val"].pos[0], pos)
