"""The tiny pack: ShapesWorld-trained components in standard diffusers/transformers classes.

``python -m pipelines.tinypack`` (``make tiny-models``) trains them from scratch.
"""

from ..training import TrainSchedule
from .config import ComponentSizes, TinyPackConfig

__all__ = ["ComponentSizes", "TinyPackConfig", "TrainSchedule"]
