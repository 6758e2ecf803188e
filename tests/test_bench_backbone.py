"""bench-backbone shows its progress (count, rate, ETA) on stderr, silenced by --quiet; the
figures on stdout stay clean."""

from __future__ import annotations

from anomaly_inspect.cli import main

ARGS = ["bench-backbone", "--weights", "random", "--image-size", "64", "--batch-size", "1",
        "--rounds", "3", "--runtime", "torch"]


def test_bench_backbone_shows_progress_on_stderr_only(capsys):
    assert main(ARGS) == 0
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.startswith("bench-backbone")]
    # the warm-up batch and three rounds of torch f32
    assert lines and "4/4" in lines[-1] and "batch/s" in lines[-1], err
    assert "bench-backbone" not in out and "batch/s" not in out
    assert "torch f32" in out


def test_bench_backbone_quiet_shows_no_progress(capsys):
    assert main([*ARGS, "--quiet"]) == 0
    assert "batch/s" not in capsys.readouterr().err
