"""``lssl bench`` (``make bench``): the ``default`` sweep on the embedded Digits-LT, then its report.

Runs ``benchmarks/default.yaml`` (every method once plus the supervised baseline, long-tailed and
balanced twin; sized to finish within 5 minutes on 2 CPU cores), prints the table, and leaves
``results/default/report.md``. Finished runs are reused: delete ``results/default`` to re-measure.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from lightning_ssl.cli import report, sweep
from lightning_ssl.cli.parsers import DEFAULT_SPEC, bench_parser
from lightning_ssl.config.errors import UsageError


def run(argv: list[str]) -> int:
    args, rest = bench_parser().parse_known_args(argv)
    if not Path(args.spec).is_file():
        raise UsageError(f"--spec {args.spec}: no such sweep spec; pass a YAML spec, e.g. {DEFAULT_SPEC}")
    started = time.perf_counter()
    code = sweep.run([args.spec, "--results", args.results, "--work", args.work, *rest])
    seconds = time.perf_counter() - started
    if code not in (0, 1):
        return code
    code = report.run([args.spec, "--results", args.results]) or code
    print(f"lssl bench: sweep took {seconds:.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
