"""deconvbench: a benchmarking harness for PSF deconvolution inside batched metacalibration.

Importing ``bench`` is cheap: GalSim, h5py and the deep-learning frameworks are
imported only by the functions that need them.
"""

import os

__version__ = "0.1.0"

# JAX would otherwise claim 75% of a GPU when first used: the other frameworks would starve
# and its memory figures would mean nothing. Set before any JAX import; a user's own
# setting wins.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
