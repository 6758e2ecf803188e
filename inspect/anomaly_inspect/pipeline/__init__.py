"""The pipeline: build backbone / extractor / scorer from a config, and the engines that run
the per-batch work."""

from .build import build, build_backbone, build_extractor
from .engine import BatchTask, Engine, LocalEngine, make_engine
from .runner import BatchScores, Extracted, Runner, score_batches

__all__ = ["BatchTask", "Engine", "Extracted", "LocalEngine", "Runner", "BatchScores", "build",
           "build_backbone", "build_extractor", "make_engine", "score_batches"]
