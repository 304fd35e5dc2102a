"""A toy metric registered by a pytest plugin (``-p toy_metric``), for tests/test_metric_plugin.py:
the ratio of the method's output flux to the truth's, per SNR bin. It touches no file of the harness."""

import numpy as np

from bench.metrics import Column, Metric, register_metric


@register_metric("toy-flux")
class ToyFlux(Metric):
    needs_image = True
    columns = (Column("toy_flux_ratio", "toy flux ratio", fmt=".5f"),)

    def __init__(self, spec=None):
        super().__init__(spec)
        self.values, self.bins = [], []

    @classmethod
    def per_object(cls, *, deconvolved, truth, shapes):
        return {"toy_flux": deconvolved.sum(axis=(-2, -1)).mean(axis=1) / truth.sum(axis=(-2, -1)).mean(axis=1)}

    def update(self, values, *, snr_bin, quad_id, shear_sign, shapes):
        self.values.append(values["toy_flux"])
        self.bins.append(np.asarray(snr_bin))

    def compute(self):
        v, b = np.concatenate(self.values), np.concatenate(self.bins)
        out = {int(k): {"toy_flux_ratio": float(np.mean(v[b == k]))} for k in np.unique(b)}
        out["all"] = {"toy_flux_ratio": float(np.mean(v))}
        return out
