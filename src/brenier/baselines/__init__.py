"""Baselines: generative models of latent codes, compared with the OT map on the same codes.

Every baseline is a class with ``fit(codes)`` → self and ``sample(n, seed)`` → (n, d) codes
(see ``base.Baseline``). ``BASELINES`` maps a registry name to its class:

* ``ot``        semi-discrete OT, extension respects the singular set (ours)
* ``ot-ignore`` the same map, extension ignores the singular set
* ``ddpm``      a denoising diffusion model (MLP denoiser, T = 1000, ancestral sampling)
* ``ddim``      the same diffusion model sampled with DDIM (100 steps)
* ``gmm``       a Gaussian mixture, number of components by BIC
* ``gaussian``  one Gaussian
* ``fm``        flow matching, independent coupling (MLP velocity, ODE sampling)
* ``sdfm``      flow matching on our semi-discrete OT coupling (x0, T(x0)) (SD-FM)

Adding a baseline is one file in this package: a ``Baseline`` subclass with a ``name``; every
module here is imported and each subclass with a new name is registered.
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import Baseline

__all__ = ["Baseline", "BASELINES", "make_baseline"]


def _discover() -> dict[str, type[Baseline]]:
    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")
    found: dict[str, type[Baseline]] = {}
    stack = list(Baseline.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls.__module__.startswith(__name__) and cls.name not in found:
            found[cls.name] = cls
    order = ["ot", "ot-ignore", "ddpm", "ddim", "gmm", "gaussian"]
    return {k: found[k] for k in sorted(found, key=lambda k: (order.index(k) if k in order else len(order), k))}


#: registry name → Baseline subclass
BASELINES: dict[str, type[Baseline]] = _discover()


def make_baseline(name: str, **params) -> Baseline:
    """An unfitted baseline by registry name, with constructor ``params``."""
    if name not in BASELINES:
        raise ValueError(f"model: unknown baseline {name!r}; expected one of {', '.join(BASELINES)}")
    return BASELINES[name](**params)
