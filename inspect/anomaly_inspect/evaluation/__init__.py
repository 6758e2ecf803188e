"""Metrics, resource measurement and the benchmark runners (evaluate, ood_benchmark, longtail)."""
