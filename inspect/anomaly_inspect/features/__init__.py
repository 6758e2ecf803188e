"""Frozen timm backbones with offline weights, and patch / pooled feature extraction."""

from .backbone import Backbone, UnknownBackboneError
from .weights import WeightsUnavailableError

__all__ = ["Backbone", "UnknownBackboneError", "WeightsUnavailableError"]
