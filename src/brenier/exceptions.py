"""Warnings and errors brenier raises at its public edge."""

from __future__ import annotations

from ._io import CorruptRunError


class ConvergenceWarning(UserWarning):
    """A solver stopped before reaching its tolerance (scikit-learn's convention).

    The message says what was reached (error, iterations, samples) and why it stopped. The
    fitted state is still usable (the best heights found), but it is not the requested answer.
    """


__all__ = ["ConvergenceWarning", "CorruptRunError"]
