"""Keep a README's results tables equal to the reports they come from.

A README shows a report's ``## Headline`` section (the compact table and, with balanced twins, the
robustness verdicts) between two marker lines, invisible once rendered::

    <!-- headline: leaderboard_fashion_mnist -->
    ...
    <!-- /headline -->

``lssl report SPEC --readme README.md`` rewrites that region from the report it has just written, so
a number in the README is always one the current code computed from the committed results.
"""

from __future__ import annotations

from pathlib import Path

END = "<!-- /headline -->"


def start_marker(name: str) -> str:
    return f"<!-- headline: {name} -->"


def headline_section(report: str) -> str:
    """The text of a report's ``## Headline`` section, without its heading and surrounding blank lines."""
    if "## Headline\n" not in report:
        raise ValueError("the report has no '## Headline' section (write it with `lssl report SPEC` first)")
    return report.split("## Headline\n", 1)[1].split("\n## ", 1)[0].strip()


def readme_region(readme: str, name: str) -> str:
    """The text between a README's markers for report ``name`` (stripped)."""
    start = start_marker(name)
    if start not in readme:
        raise ValueError(f"the README has no '{start}' line; put it and '{END}' around where the table goes")
    rest = readme.split(start, 1)[1]
    if END not in rest:
        raise ValueError(f"the README's '{start}' has no closing '{END}' line after it; add one")
    return rest.split(END, 1)[0].strip()


def update_readme(readme_path: Path, report: str, name: str) -> bool:
    """Write ``report``'s Headline section between the README's markers for ``name``; returns whether
    the README changed. A missing marker is an error naming it; the README is left as it was."""
    readme = Path(readme_path).read_text()
    old = readme_region(readme, name)
    new = headline_section(report)
    if old == new:
        return False
    start = start_marker(name)
    head, rest = readme.split(start, 1)
    tail = rest.split(END, 1)[1]
    Path(readme_path).write_text(f"{head}{start}\n{new}\n{END}{tail}")
    return True
