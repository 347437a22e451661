"""BENCHMARKS.md is written by several benches: each replaces its own sections and keeps the others',
so that `python -m bench.run --only X` refreshes X without dropping what the last full run wrote."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.report import put_sections

if TYPE_CHECKING:
    from pathlib import Path

CAPTURE = "# Benchmarks\n\nCapture, run {n}.\n\n## Every contestant\n\ntable {n}\n\n## Against the peers\n\nratios {n}\n"


def headings(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("## ")]


def test_a_section_is_added_then_replaced_in_place(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    put_sections(path, CAPTURE.format(n=1))
    put_sections(path, "## Scale-out\n\nscale 1\n")
    put_sections(path, "## Growth\n\ncurve 1\n")
    put_sections(path, "## Scale-out\n\nscale 2\n")
    text = path.read_text(encoding="utf-8")
    assert headings(path) == ["## Every contestant", "## Against the peers", "## Scale-out", "## Growth"]
    assert "scale 2" in text
    assert "scale 1" not in text
    assert "curve 1" in text


def test_the_capture_bench_keeps_the_other_sections(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    put_sections(path, CAPTURE.format(n=1))
    put_sections(path, "## Growth\n\ncurve 1\n")
    put_sections(path, CAPTURE.format(n=2))
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# Benchmarks\n\nCapture, run 2.\n")
    assert "table 2" in text
    assert "ratios 2" in text
    assert "table 1" not in text
    assert "curve 1" in text
    assert headings(path) == ["## Every contestant", "## Against the peers", "## Growth"]


def test_a_section_alone_starts_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    put_sections(path, "## Growth\n\ncurve 1\n")
    assert path.read_text(encoding="utf-8") == "# Benchmarks\n\n## Growth\n\ncurve 1\n"
