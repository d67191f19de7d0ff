"""brenier: geometric optimal-transport generative modelling.

Semi-discrete optimal transport from a simple source measure onto data (latent codes) as the
gradient of a convex Brenier potential, with the exact power diagram in 2-D.
"""

from .exceptions import ConvergenceWarning, CorruptRunError
from .ot import BrenierPotential, NotFittedError, PowerDiagram, SemiDiscreteOT, power_diagram
from .pipeline import AEOT

__version__ = "0.1.0"

__all__ = ["AEOT", "BrenierPotential", "ConvergenceWarning", "CorruptRunError", "NotFittedError", "PowerDiagram", "SemiDiscreteOT", "power_diagram", "__version__"]
