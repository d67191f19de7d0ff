"""Semi-discrete optimal transport: the Brenier potential, Monte Carlo and exact 2-D solvers."""

from .potential import BrenierPotential
from .power_diagram import PowerDiagram, power_diagram
from .semi_discrete import NotFittedError, SemiDiscreteOT

__all__ = ["BrenierPotential", "NotFittedError", "PowerDiagram", "SemiDiscreteOT", "power_diagram"]
