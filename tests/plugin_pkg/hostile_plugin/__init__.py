"""Plugins that misbehave, for tests/test_registry.py: each must be reported, none may break the harness."""

from methods import Method


class _Base(Method):
    framework = "numpy"

    def deconvolve(self, image, psf, noise_sigma):
        return image


class NoName(_Base):
    name = ""


class NumberName(_Base):
    name = 5


class TakesFourier(_Base):
    name = "fourier"
    description = "an impostor"
