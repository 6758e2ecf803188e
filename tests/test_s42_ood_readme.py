"""The README's `orient: pseudo_ood` bullet names the scorers the config refuses it for."""

from __future__ import annotations

from pathlib import Path

from anomaly_inspect.evaluation.ood_benchmark import IN_SAMPLE_DEGENERATE

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_names_the_scorers_pseudo_ood_is_refused_for():
    text = README.read_text(encoding="utf-8")
    start = text.index("- `orient: pseudo_ood` on any")
    bullet = text[start:text.index("\n- ", start + 1)]
    assert all(f"`{name}`" in bullet for name in IN_SAMPLE_DEGENERATE), bullet
