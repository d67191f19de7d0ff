"""Datasets: 2-D toy distributions with exact ground truth; image data sets (``load``)."""

from .images import IMAGE_NAMES, load
from .toy import TOY_NAMES, ToyData, seahorse_polygon, toy
from .laplace import LaplaceData, laplace
from .scenes import GlassScenes, OcclusionScenes, occlusion_scenes, tilting_glass, tipping_glass

__all__ = ["toy", "ToyData", "TOY_NAMES", "seahorse_polygon", "load", "IMAGE_NAMES",
           "laplace", "LaplaceData", "occlusion_scenes", "OcclusionScenes", "tilting_glass", "tipping_glass", "GlassScenes"]
