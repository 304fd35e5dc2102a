"""A tiny third-party method, registered only through the entry-point group."""

from methods import Method


class DemoIdentity(Method):
    name = "demo-identity"
    framework = "numpy"
    description = "returns the observed image (plugin test)"

    def deconvolve(self, image, psf, noise_sigma):
        return image
