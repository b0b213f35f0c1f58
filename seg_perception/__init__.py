"""seg_perception: camera semantic segmentation for autonomous vehicles."""

__version__ = '0.1.0'
