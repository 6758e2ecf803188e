"""Day-to-day screening: fit once on normal images, save, screen new batches.

``fit`` -> :class:`Model` (``save``) -> ``load_model`` -> ``Model.screen`` / ``Model.score``.
"""

from .model import Model, ScoredImage, fit, load_model
from .model_dir import MODEL_FORMAT_VERSION, ModelFormatError
from .runner import ScreenSummary, screen

__all__ = ["MODEL_FORMAT_VERSION", "Model", "ModelFormatError", "ScoredImage", "ScreenSummary",
           "fit", "load_model", "screen"]
