"""Label-free auto-configuration: synthetic-anomaly validation, rank aggregation, ensembles."""

from .candidates import Candidate, candidate_grid
from .rank import NormalCalibration, fuse, trimmed_borda
from .tune import TuneSettings, TuningResult, tune

__all__ = ["Candidate", "NormalCalibration", "TuneSettings", "TuningResult", "candidate_grid", "fuse",
           "trimmed_borda", "tune"]
