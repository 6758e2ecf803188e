"""Typed sample records shared by every adapter."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Sample:
    """One image on disk and what is known about it.

    ``label`` is 0 for normal / in-distribution, 1 for anomalous / OOD and
    ``None`` when unknown (e.g. images to be screened). ``group`` names the
    defect type, product class or OOD split the image belongs to.
    """

    path: Path
    label: int | None = None
    split: str = "test"
    group: str = ""
    mask_path: Path | None = None

    @property
    def name(self) -> str:
        return self.path.name

