"""anomaly-inspect: anomaly inspection for industrial and medical images.

A plain torch/numpy core: dataset adapters (``data``), offline timm backbones
(``features``), scorers with one ``fit``/``score`` interface (``scorers``) and
leakage-free evaluation (``evaluation``). The command-line interface in
``cli`` is a thin layer over these modules.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
