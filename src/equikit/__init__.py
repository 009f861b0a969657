"""equikit: symmetry for deep learning in PyTorch.

Groups and their actions on data (:mod:`equikit.groups`), the equivariance checker every
other part is tested with (:mod:`equikit.check`), and the layers above them.
"""

__version__ = "0.1.0"
