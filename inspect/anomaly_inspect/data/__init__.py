"""Dataset adapters, robust image reading and transforms."""

from .image_io import ImageReadError, read_image, read_mask
from .samples import Sample

__all__ = ["ImageReadError", "Sample", "read_image", "read_mask"]
