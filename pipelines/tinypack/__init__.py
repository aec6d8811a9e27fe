"""The tiny pack: ShapesWorld-trained components in standard diffusers/transformers classes.

``python -m pipelines.tinypack`` (``make tiny-models``) trains them from scratch.
"""

from .config import ComponentSizes, TinyPackConfig, TrainSchedule

__all__ = ["ComponentSizes", "TinyPackConfig", "TrainSchedule"]
