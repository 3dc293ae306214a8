"""The ``lssl`` command: one entry point, sub-commands dispatched by their first word."""

from __future__ import annotations

import os
import sys

USAGE = """usage: lssl COMMAND ...

  fit | validate | test   LightningCLI (YAML configs, --model / --data by class name or path)
  probe CHECKPOINT        offline evaluation of a checkpoint (linear probes, kNN)
  data stats NAME         per-class counts, imbalance ratio, groups, probe/test sizes
  data card NAME          the dataset's card (protocol, source, mean/std, group rule)
  dnc                     the Divide-and-Contrast pipeline (resumable, stage by stage)
  sweep SPEC              expand and launch a benchmark sweep (local, slurm, wandb; --dry-run)
  report SPEC|DIR         tables and plots from a sweep's results
  bench                   the default benchmark on the embedded dataset
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # user methods/datamodules in the working directory are importable by class path
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "data":
        from lightning_ssl.cli.data_stats import run

        return run(rest)
    if command in ("fit", "validate", "test"):
        from lightning_ssl.cli.lightning import run_lightning_cli

        run_lightning_cli([command, *rest])
        return 0
    if command == "probe":
        from lightning_ssl.cli.probe import run

        return run(rest)
    if command in ("dnc", "sweep", "report"):
        import importlib

        return importlib.import_module(f"lightning_ssl.cli.{command}").run(rest)
    if command == "bench":
        from lightning_ssl.cli.bench import run

        return run(rest)
    print(f"unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
