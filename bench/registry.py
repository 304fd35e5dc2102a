"""Named subclasses of one base class, filled by a class decorator (timm's ``register_model``): the
shear estimators and the metrics use it; unknown names are refused with the closest suggested."""

from __future__ import annotations

from .errors import BenchTypeError, unknown_name


class Registry:
    """Subclasses of *base* registered under names, in registration order.

    Parameters
    ----------
    kind : str
        What the names name, for messages ("shear estimator", "metric").
    base : type
        The class every registered one must derive from.
    """

    def __init__(self, kind: str, base: type):
        self.kind, self.base = kind, base
        self._classes: dict[str, type] = {}

    def register(self, name: str):
        """Class decorator: register the class under *name* (and set its ``name``)."""
        def deco(cls):
            if not (isinstance(cls, type) and issubclass(cls, self.base)):
                raise BenchTypeError(f"{self.kind} {name!r} must be a {self.base.__name__} subclass, got {cls!r}")
            cls.name = name
            self._classes[name] = cls
            return cls
        return deco

    def unregister(self, name: str) -> None:
        """Remove *name* (a test's, or a plugin's being reloaded); absent names are ignored."""
        self._classes.pop(name, None)

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._classes)

    def get(self, name: str) -> type:
        """The class registered as *name*."""
        if name not in self._classes:
            raise unknown_name(self.kind, name, self.names())
        return self._classes[name]
