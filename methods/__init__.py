"""Deconvolution methods and their registry.

>>> from methods import list_methods, get_method
>>> list_methods("wiener*")
"""

from .registry import (ENTRY_POINT_GROUP, Method, get_method, get_method_class, list_methods,
                       register)

# Built-in methods register on import; heavy frameworks are imported inside them only when run.
from . import dwdn, fourier, resnet_jax, richardson_lucy, wiener  # noqa: E402,F401

__all__ = ["Method", "register", "list_methods", "get_method", "get_method_class",
           "ENTRY_POINT_GROUP"]
