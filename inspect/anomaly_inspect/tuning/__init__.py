"""Label-free auto-configuration: synthetic-anomaly validation, rank aggregation, ensembles."""

from ..evaluation.fusion import NormalCalibration, fuse
from .candidates import Candidate, candidate_grid
from .rank import trimmed_borda
from .tune import TuneSettings, TuningResult, tune

__all__ = ["Candidate", "NormalCalibration", "TuneSettings", "TuningResult", "candidate_grid", "fuse",
           "trimmed_borda", "tune"]
