"""``lssl report SPEC --readme README.md`` writes the report's headline between the README's markers,
and nowhere else; a README without the markers is refused before any work, named with the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightning_ssl.sweep.readme import END, headline_section, readme_region, start_marker, update_readme

REPORT = "# demo\n\n- runs: 2\n\n## Headline\n\n| method | acc |\n|---|---|\n| A | 90.00 |\n\n## Results\n\nmore\n"


def test_the_region_between_the_markers_becomes_the_headline(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n\n{start_marker('demo')}\n| method | acc |\n| A | 1.00 |\n{END}\n\noutro\n")
    assert update_readme(readme, REPORT, "demo") is True
    text = readme.read_text()
    assert text == f"intro\n\n{start_marker('demo')}\n| method | acc |\n|---|---|\n| A | 90.00 |\n{END}\n\noutro\n"
    assert readme_region(text, "demo") == headline_section(REPORT)
    assert update_readme(readme, REPORT, "demo") is False  # nothing to change: the file is not rewritten


def test_missing_markers_are_named_and_the_readme_is_kept(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("no markers here\n")
    with pytest.raises(ValueError, match="the README has no '<!-- headline: demo -->' line; put it and"):
        update_readme(readme, REPORT, "demo")
    readme.write_text(f"{start_marker('demo')}\n| old |\n")
    with pytest.raises(ValueError, match="has no closing '<!-- /headline -->' line"):
        update_readme(readme, REPORT, "demo")
    assert readme.read_text() == f"{start_marker('demo')}\n| old |\n"


def test_lssl_report_refuses_a_readme_without_markers_before_writing(tmp_path: Path) -> None:
    from lightning_ssl.cli.main import main

    readme = tmp_path / "README.md"
    readme.write_text("nothing\n")
    out = tmp_path / "out"
    assert main(["report", str(tmp_path), "--out", str(out), "--readme", str(readme)]) == 2
    assert not out.exists()
