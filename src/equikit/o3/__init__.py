"""O(3): irreps, rotations, real spherical harmonics, Wigner D, Clebsch-Gordan and Gaunt
coefficients, sphere grids, the :class:`IrrepsRep` action and :class:`IrrepsTensor`.

One basis everywhere, the same as e3nn's: ``Y_l^m(x, y, z) = S_l^m(z, x, y)`` with ``S`` the
textbook real harmonics (z polar, no Condon-Shortley phase), so ``l = 1`` features are plain
``(x, y, z)`` vectors and ``D_1(R) = R``. See ``docs/o3.md``.
"""

from equikit.o3._cg import (
    clebsch_gordan,
    clebsch_gordan_table,
    count_nonzero,
    gaunt,
    is_coupled,
    real_from_complex,
)
from equikit.o3._grid import SphereGrid, default_resolution, from_grid, sphere_grid, to_grid
from equikit.o3._irreps import Irrep, Irreps, MulIr, irrep
from equikit.o3._irreps_tensor import IrrepsTensor, concatenate
from equikit.o3._rep import IrrepsRep
from equikit.o3._rotations import (
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
from equikit.o3._sh import spherical_harmonics, sphericart_available
from equikit.o3._wigner import irrep_D, irreps_D, wigner_D

__all__ = [
    "Irrep",
    "Irreps",
    "IrrepsRep",
    "IrrepsTensor",
    "MulIr",
    "SphereGrid",
    "axis_angle_to_matrix",
    "axis_angle_to_quaternion",
    "check_rotation",
    "clebsch_gordan",
    "clebsch_gordan_table",
    "concatenate",
    "count_nonzero",
    "default_resolution",
    "euler_to_matrix",
    "from_grid",
    "gaunt",
    "irrep",
    "irrep_D",
    "irreps_D",
    "is_coupled",
    "matrix_to_axis_angle",
    "matrix_to_euler",
    "matrix_to_quaternion",
    "quaternion_inverse",
    "quaternion_multiply",
    "quaternion_to_axis_angle",
    "quaternion_to_matrix",
    "random_rotation",
    "real_from_complex",
    "rotation_x",
    "rotation_y",
    "rotation_z",
    "sphere_grid",
    "spherical_harmonics",
    "sphericart_available",
    "to_grid",
    "wigner_D",
]
