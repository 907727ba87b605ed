"""femurseg: proximal femur segmentation in hip QCT with a 3D V-Net.

The public API grows with the package; see README.md.
"""

from femurseg.errors import FemursegError, InputError, ModelError, NoFemurFound

__version__ = "0.1.0"

__all__ = ["__version__", "FemursegError", "InputError", "ModelError", "NoFemurFound"]
