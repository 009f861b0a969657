"""Rotations of R^3: matrices, quaternions, axis-angle and Euler angles.

Conventions (all batched over leading dims, any float dtype, differentiable):

- A rotation matrix ``R`` (``(..., 3, 3)``, ``R^T R = I``, ``det R = +1``) acts on column
  vectors, ``x -> R x``; composition is the matrix product, ``R1 R2`` applies ``R2`` first. This
  is exactly :class:`equikit.groups.SO` ``(3)`` (and ``O(3)`` for ``det = -1``).
- Quaternions are ``(..., 4)`` = ``(w, x, y, z)``, scalar first, unit norm; ``q`` and ``-q``
  are the same rotation. ``quaternion_multiply(q1, q2)`` corresponds to ``R1 @ R2``.
- Axis-angle is ``(axis (..., 3) unit vector, angle (...))``, right-handed: the rotation by
  ``angle`` counter-clockwise about ``axis`` (Rodrigues' formula).
- Euler angles ``(alpha, beta, gamma)`` are **ZYZ**:
  ``R = Rz(alpha) @ Ry(beta) @ Rz(gamma)``, ``alpha, gamma in (-pi, pi]``, ``beta in [0, pi]``.
"""

from __future__ import annotations

import torch

from equikit._utils import check_int, default_dtype
from equikit.groups.continuous import SO, O


# --------------------------------------------------------------------------- validation
def check_rotation(
    R: torch.Tensor,
    name: str = "R",
    where: str = "equikit.o3",
    *,
    proper: bool | None = True,
    atol: float | None = None,
) -> torch.Tensor:
    """Raise ValueError/TypeError unless ``R`` is a batch of orthogonal ``(..., 3, 3)`` matrices.

    ``proper=True`` requires ``det = +1`` (SO(3)); ``False`` requires ``det = -1``; ``None``
    accepts both (O(3)). ``atol`` defaults to ``1e-4`` for float32 and ``1e-9`` for float64.
    """
    if not isinstance(R, torch.Tensor):
        raise TypeError(f"{where}: `{name}` must be a torch.Tensor, got {type(R).__name__}")
    if not R.is_floating_point():
        raise TypeError(f"{where}: `{name}` must be a floating tensor, got dtype {R.dtype}")
    if R.ndim < 2 or tuple(R.shape[-2:]) != (3, 3):
        raise ValueError(f"{where}: `{name}` must have shape (..., 3, 3), got {tuple(R.shape)}")
    if R.numel() == 0:
        return R
    if atol is None:
        atol = 1e-9 if R.dtype == torch.float64 else 1e-4
    eye = torch.eye(3, dtype=R.dtype, device=R.device)
    err = (R.transpose(-1, -2) @ R - eye).abs().amax()
    if not err <= atol:
        raise ValueError(
            f"{where}: `{name}` must be orthogonal (R^T R = I), but |R^T R - I| reaches "
            f"{float(err):.3g} > {atol:g}; orthonormalise it (e.g. with torch.linalg.qr) or build "
            "it from a quaternion/axis-angle"
        )
    if proper is not None:
        det = torch.linalg.det(R)
        want = 1.0 if proper else -1.0
        bad = (det - want).abs() > 1e-3
        if bool(bad.any()):
            raise ValueError(
                f"{where}: `{name}` must have determinant {want:+.0f} "
                f"({'a rotation, SO(3)' if proper else 'an improper element'}), but "
                f"{int(bad.sum())} matrices have det {float(det[bad].flatten()[0]):+.3g}; for "
                "reflections use O(3) (parity) or pass -R"
            )
    return R


def _check_last(t: torch.Tensor, n: int, name: str, where: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{where}: `{name}` must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{where}: `{name}` must be a floating tensor, got dtype {t.dtype}")
    if t.ndim < 1 or t.shape[-1] != n:
        raise ValueError(f"{where}: `{name}` must have shape (..., {n}), got {tuple(t.shape)}")
    return t


# --------------------------------------------------------------------------- random
def random_rotation(
    n: int = 1,
    *,
    generator: torch.Generator | int | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    improper: bool = False,
) -> torch.Tensor:
    """``n`` Haar-random rotations ``(n, 3, 3)``: the same draws as ``SO(3).sample``
    (``O(3).sample`` with ``improper=True``, which includes reflections).

    >>> R = random_rotation(2, generator=0, dtype=torch.float64)
    >>> torch.allclose(R, SO(3).sample(2, generator=0, dtype=torch.float64))
    True
    """
    check_int(n, "n", "random_rotation", minimum=0)
    group = O(3) if improper else SO(3)
    return group.sample(n, generator=generator, dtype=dtype, device=device)


# --------------------------------------------------------------------------- axis rotations
def _as_float(a) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a if a.is_floating_point() else a.to(default_dtype(None))
    return torch.as_tensor(a, dtype=default_dtype(None))


def _axis_matrix(angle: torch.Tensor, axis: int) -> torch.Tensor:
    c, s = torch.cos(angle), torch.sin(angle)
    o, z = torch.ones_like(angle), torch.zeros_like(angle)
    if axis == 0:
        rows = [[o, z, z], [z, c, -s], [z, s, c]]
    elif axis == 1:
        rows = [[c, z, s], [z, o, z], [-s, z, c]]
    else:
        rows = [[c, -s, z], [s, c, z], [z, z, o]]
    return torch.stack([torch.stack(r, -1) for r in rows], -2)


def rotation_x(angle: torch.Tensor) -> torch.Tensor:
    """Counter-clockwise rotation about x by ``angle`` ``(...)`` -> ``(..., 3, 3)``."""
    return _axis_matrix(_as_float(angle), 0)


def rotation_y(angle: torch.Tensor) -> torch.Tensor:
    """Counter-clockwise rotation about y by ``angle`` ``(...)`` -> ``(..., 3, 3)``."""
    return _axis_matrix(_as_float(angle), 1)


def rotation_z(angle: torch.Tensor) -> torch.Tensor:
    """Counter-clockwise rotation about z by ``angle`` ``(...)`` -> ``(..., 3, 3)``."""
    return _axis_matrix(_as_float(angle), 2)


# --------------------------------------------------------------------------- euler (ZYZ)
def euler_to_matrix(alpha: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """ZYZ Euler angles -> ``Rz(alpha) Ry(beta) Rz(gamma)``, shape ``(..., 3, 3)``.

    >>> R = euler_to_matrix(*(torch.tensor(0.3, dtype=torch.float64),) * 3)
    >>> a, b, c = matrix_to_euler(R)
    >>> round(float(b), 6)
    0.3
    """
    alpha, beta, gamma = torch.broadcast_tensors(*(_as_float(a) for a in (alpha, beta, gamma)))
    return _axis_matrix(alpha, 2) @ _axis_matrix(beta, 1) @ _axis_matrix(gamma, 2)


def matrix_to_euler(R: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rotation matrices ``(..., 3, 3)`` -> ZYZ angles ``(alpha, beta, gamma)`` each ``(...)``.

    ``beta = atan2(sqrt(R02^2 + R12^2), R22)`` keeps full precision near the poles; at
    ``beta = 0`` or ``pi`` only ``alpha +- gamma`` is defined and ``gamma`` is set to 0.
    """
    check_rotation(R, "R", "matrix_to_euler")
    sb = torch.sqrt(R[..., 0, 2] ** 2 + R[..., 1, 2] ** 2)
    beta = torch.atan2(sb, R[..., 2, 2])
    eps = 1e-7 if R.dtype == torch.float64 else 1e-4
    regular = sb > eps
    alpha_r = torch.atan2(R[..., 1, 2], R[..., 0, 2])
    gamma_r = torch.atan2(R[..., 2, 1], -R[..., 2, 0])
    # gimbal lock: R = Rz(alpha + gamma cos beta) ... with gamma = 0
    alpha_s = torch.where(
        R[..., 2, 2] >= 0,
        torch.atan2(R[..., 1, 0], R[..., 0, 0]),
        torch.atan2(-R[..., 1, 0], -R[..., 0, 0]),
    )
    alpha = torch.where(regular, alpha_r, alpha_s)
    gamma = torch.where(regular, gamma_r, torch.zeros_like(gamma_r))
    return alpha, beta, gamma


# --------------------------------------------------------------------------- axis-angle
def axis_angle_to_matrix(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues: ``R = I + sin(t) K + (1 - cos(t)) K^2`` with ``K`` the cross-product matrix of
    the unit ``axis`` ``(..., 3)``; ``angle`` ``(...)``. The axis is normalised here.
    """
    axis = _check_last(axis, 3, "axis", "axis_angle_to_matrix")
    angle = torch.as_tensor(angle, dtype=axis.dtype, device=axis.device)
    axis = axis / torch.linalg.norm(axis, dim=-1, keepdim=True)
    return quaternion_to_matrix(axis_angle_to_quaternion(axis, angle))


def matrix_to_axis_angle(R: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotation matrices -> ``(axis (..., 3), angle (...))`` with ``angle in [0, pi]``."""
    check_rotation(R, "R", "matrix_to_axis_angle")
    return quaternion_to_axis_angle(matrix_to_quaternion(R))


# --------------------------------------------------------------------------- quaternions
def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Unit quaternions ``(..., 4)`` ``(w, x, y, z)`` -> rotation matrices ``(..., 3, 3)``.

    The quaternion is normalised first, so any nonzero ``q`` gives a rotation.
    """
    q = _check_last(q, 4, "q", "quaternion_to_matrix")
    q = q / torch.linalg.norm(q, dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]
    return torch.stack([torch.stack(r, -1) for r in rows], -2)


def matrix_to_quaternion(R: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``(..., 3, 3)`` -> unit quaternions ``(..., 4)`` with ``w >= 0``.

    Uses the largest of the four candidate pivots per matrix (Shepperd's method), so the
    result is accurate for every rotation, including angle ``pi``.
    """
    check_rotation(R, "R", "matrix_to_quaternion")
    m = R
    t = torch.stack(
        [
            1 + m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2],
            1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
            1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2],
            1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2],
        ],
        -1,
    )
    # candidate k: component k is sqrt(t_k)/2, the others from off-diagonal sums/differences
    s01, d01 = m[..., 0, 1] + m[..., 1, 0], m[..., 1, 0] - m[..., 0, 1]
    s02, d02 = m[..., 0, 2] + m[..., 2, 0], m[..., 0, 2] - m[..., 2, 0]
    s12, d12 = m[..., 1, 2] + m[..., 2, 1], m[..., 2, 1] - m[..., 1, 2]
    cand = torch.stack(
        [
            torch.stack([t[..., 0], d12, d02, d01], -1),
            torch.stack([d12, t[..., 1], s01, s02], -1),
            torch.stack([d02, s01, t[..., 2], s12], -1),
            torch.stack([d01, s02, s12, t[..., 3]], -1),
        ],
        -2,
    )  # (..., 4 candidates, 4)
    k = t.argmax(-1)
    pivot = torch.gather(t, -1, k.unsqueeze(-1)).clamp_min(1e-300)
    q = torch.gather(cand, -2, k[..., None, None].expand(*k.shape, 1, 4)).squeeze(-2)
    q = q / (2 * torch.sqrt(pivot))
    return q * torch.where(q[..., :1] < 0, -1.0, 1.0).to(q.dtype)


def quaternion_multiply(q1: torch.Tensor, q2: torch.Tensor) -> torch.Tensor:
    """Hamilton product ``q1 q2`` ``(..., 4)``: the rotation ``R(q1) @ R(q2)``."""
    q1 = _check_last(q1, 4, "q1", "quaternion_multiply")
    q2 = _check_last(q2, 4, "q2", "quaternion_multiply")
    w1, x1, y1, z1 = q1.unbind(-1)
    w2, x2, y2, z2 = q2.unbind(-1)
    return torch.stack(
        [
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
            w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
        ],
        -1,
    )


def quaternion_inverse(q: torch.Tensor) -> torch.Tensor:
    """Inverse of unit quaternions: the conjugate ``(w, -x, -y, -z)``."""
    q = _check_last(q, 4, "q", "quaternion_inverse")
    return q * torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=q.dtype, device=q.device)


def axis_angle_to_quaternion(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """``(axis (..., 3), angle (...))`` -> ``(cos(t/2), sin(t/2) axis)``; axis is normalised."""
    axis = _check_last(axis, 3, "axis", "axis_angle_to_quaternion")
    angle = torch.as_tensor(angle, dtype=axis.dtype, device=axis.device)
    axis = axis / torch.linalg.norm(axis, dim=-1, keepdim=True)
    half = angle / 2
    return torch.cat([torch.cos(half).unsqueeze(-1), torch.sin(half).unsqueeze(-1) * axis], -1)


def quaternion_to_axis_angle(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit quaternions -> ``(axis, angle)`` with ``angle in [0, pi]``; the axis of the
    identity is returned as ``(0, 0, 1)``."""
    q = _check_last(q, 4, "q", "quaternion_to_axis_angle")
    q = q / torch.linalg.norm(q, dim=-1, keepdim=True)
    q = q * torch.where(q[..., :1] < 0, -1.0, 1.0).to(q.dtype)
    v = q[..., 1:]
    s = torch.linalg.norm(v, dim=-1)
    angle = 2 * torch.atan2(s, q[..., 0])
    safe = s > 0
    default = torch.tensor([0.0, 0.0, 1.0], dtype=q.dtype, device=q.device).expand_as(v)
    axis = torch.where(safe.unsqueeze(-1), v / torch.where(safe, s, 1).unsqueeze(-1), default)
    return axis, angle
