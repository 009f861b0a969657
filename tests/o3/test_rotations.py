import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from equikit.groups import SO, O
from equikit.o3 import (
    axis_angle_to_matrix,
    axis_angle_to_quaternion,
    check_rotation,
    euler_to_matrix,
    matrix_to_axis_angle,
    matrix_to_euler,
    matrix_to_quaternion,
    quaternion_inverse,
    quaternion_multiply,
    quaternion_to_axis_angle,
    quaternion_to_matrix,
    random_rotation,
    rotation_x,
    rotation_y,
    rotation_z,
)

TOL = {torch.float32: 1e-5, torch.float64: 1e-12}


def close(a, b, dtype, scale=1.0):
    assert (a - b).abs().max().item() <= TOL[dtype] * scale, (a - b).abs().max().item()


def test_random_rotation_is_haar_group_sample(dtype):
    R = random_rotation(64, generator=3, dtype=dtype)
    assert torch.equal(R, SO(3).sample(64, generator=3, dtype=dtype))
    close(R.transpose(-1, -2) @ R, torch.eye(3, dtype=dtype).expand(64, 3, 3), dtype, 10)
    close(torch.linalg.det(R), torch.ones(64, dtype=dtype), dtype, 10)
    g = random_rotation(256, generator=1, improper=True, dtype=torch.float64)
    assert torch.equal(g, O(3).sample(256, generator=1, dtype=torch.float64))
    dets = torch.linalg.det(g)
    assert (dets < 0).any() and (dets > 0).any()
    # Haar: E[R] = 0 (a biased sampler would not average out)
    assert random_rotation(4000, generator=0, dtype=torch.float64).mean(0).abs().max() < 0.05


def test_axis_rotations_are_counterclockwise(dtype):
    t = torch.tensor(math.pi / 2, dtype=dtype)
    e = torch.eye(3, dtype=dtype)
    close(rotation_z(t) @ e[0], e[1], dtype)
    close(rotation_x(t) @ e[1], e[2], dtype)
    close(rotation_y(t) @ e[2], e[0], dtype)


def test_quaternion_round_trip_and_composition(dtype):
    R1, R2 = (
        random_rotation(2, generator=5, dtype=dtype),
        random_rotation(2, generator=6, dtype=dtype),
    )
    q1, q2 = matrix_to_quaternion(R1), matrix_to_quaternion(R2)
    close(torch.linalg.norm(q1, dim=-1), torch.ones(2, dtype=dtype), dtype, 10)
    assert (q1[..., 0] >= 0).all()
    close(quaternion_to_matrix(q1), R1, dtype, 10)
    close(quaternion_to_matrix(quaternion_multiply(q1, q2)), R1 @ R2, dtype, 10)
    close(quaternion_to_matrix(quaternion_inverse(q1)), R1.transpose(-1, -2), dtype, 10)


@pytest.mark.parametrize("angle", [0.0, 1e-9, 0.7, math.pi - 1e-9, math.pi])
def test_axis_angle_round_trip(dtype, angle):
    axis = torch.tensor([[0.3, -0.5, 0.8], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], dtype=dtype)
    axis = axis / axis.norm(dim=-1, keepdim=True)
    R = axis_angle_to_matrix(axis, torch.full((3,), angle, dtype=dtype))
    check_rotation(R)
    v = torch.randn(3, dtype=dtype)
    # Rodrigues directly: R v = v cos t + (a x v) sin t + a (a.v)(1 - cos t)
    for i in range(3):
        a = axis[i]
        ref = v * math.cos(angle) + torch.cross(a, v, dim=0) * math.sin(angle)
        ref = ref + a * (a @ v) * (1 - math.cos(angle))
        close(R[i] @ v, ref, dtype, 10)
    ax2, ang2 = matrix_to_axis_angle(R)
    close(axis_angle_to_matrix(ax2, ang2), R, dtype, 10)
    if angle > 1e-3:
        close(
            ang2,
            torch.full((3,), angle, dtype=dtype),
            dtype,
            100 if dtype == torch.float32 else 1e3,
        )
    q = axis_angle_to_quaternion(axis, torch.full((3,), angle, dtype=dtype))
    ax3, ang3 = quaternion_to_axis_angle(q)
    close(axis_angle_to_matrix(ax3, ang3), R, dtype, 10)


def test_euler_zyz_convention_and_round_trip(dtype):
    a, b, c = (
        torch.rand(50, dtype=dtype, generator=torch.Generator().manual_seed(i)) * s
        for i, s in enumerate([2 * math.pi, math.pi, 2 * math.pi])
    )
    R = euler_to_matrix(a, b, c)
    close(R, rotation_z(a) @ rotation_y(b) @ rotation_z(c), dtype, 10)
    close(euler_to_matrix(*matrix_to_euler(R)), R, dtype, 10)
    Rr = random_rotation(100, generator=2, dtype=dtype)
    a2, b2, c2 = matrix_to_euler(Rr)
    assert ((b2 >= 0) & (b2 <= math.pi)).all()
    close(euler_to_matrix(a2, b2, c2), Rr, dtype, 10)


@pytest.mark.parametrize("beta", [0.0, math.pi])
def test_euler_gimbal_lock(dtype, beta):
    R = euler_to_matrix(
        torch.tensor(0.4, dtype=dtype),
        torch.tensor(beta, dtype=dtype),
        torch.tensor(1.1, dtype=dtype),
    )
    close(euler_to_matrix(*matrix_to_euler(R)), R, dtype, 10)


@given(st.floats(-math.pi, math.pi), st.floats(0, math.pi), st.floats(-math.pi, math.pi))
@settings(max_examples=25)
def test_euler_property(a, b, c):
    R = euler_to_matrix(*(torch.tensor(v, dtype=torch.float64) for v in (a, b, c)))
    close(euler_to_matrix(*matrix_to_euler(R)), R, torch.float64, 10)
    close(quaternion_to_matrix(matrix_to_quaternion(R)), R, torch.float64, 10)


def test_conversions_are_differentiable():
    q = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda q: matrix_to_quaternion(quaternion_to_matrix(q)), (q,))


def test_check_rotation_errors():
    with pytest.raises(ValueError, match=r"matrix_to_quaternion: `R` must be orthogonal.*orthonormalise"):
        matrix_to_quaternion(torch.randn(3, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"determinant \+1.*reflections"):
        matrix_to_euler(-torch.eye(3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 3, 3\)"):
        check_rotation(torch.eye(4))
    with pytest.raises(TypeError, match="floating"):
        check_rotation(torch.eye(3, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"determinant -1"):
        check_rotation(torch.eye(3), proper=False)
    check_rotation(-torch.eye(3), proper=None)
    with pytest.raises(ValueError, match=r"quaternion_to_matrix: `q` must have shape \(\.\.\., 4\)"):
        quaternion_to_matrix(torch.ones(3))
