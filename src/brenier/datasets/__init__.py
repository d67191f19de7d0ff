"""Datasets: 2-D toy distributions with exact ground truth (more loaders to come)."""

from .toy import TOY_NAMES, ToyData, seahorse_polygon, toy

__all__ = ["toy", "ToyData", "TOY_NAMES", "seahorse_polygon"]
