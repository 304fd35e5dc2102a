"""deconvbench: a benchmarking harness for PSF deconvolution inside batched metacalibration.

Importing ``bench`` is cheap: GalSim, h5py and the deep-learning frameworks are
imported only by the functions that need them.
"""

__version__ = "0.1.0"
