"""Training and tuning commands: drivers above the methods, the datasets and the metacal engine.

* ``python -m methods.train.dwdn``: train DWDN (:mod:`methods.train.dwdn`);
* ``python -m methods.train.resnet_jax``: train the JAX resnet (:mod:`methods.train.resnet_jax`);
* ``python -m methods.train.tune METHOD``: scan a classical method's setting (:mod:`methods.train.tune`);
* :mod:`methods.train.common`: what the two training commands share (splits, data, cards, the CLI).

The methods themselves (``methods.dwdn``, ``methods.resnet_jax``) never import this package.
"""
