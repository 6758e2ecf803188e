"""Metrics, resource measurement, evaluation pipelines and reports."""
