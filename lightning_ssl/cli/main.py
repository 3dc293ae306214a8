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
  help NAME               a method's or dataset's options (also: lssl fit --model NAME --help)

  --debug                 show the traceback of a usage error (otherwise one line, exit status 2)
  --verbose               fit: keep Lightning's tips and repeated warnings (silenced by default)
"""


def main(argv: list[str] | None = None) -> int:
    """Run one ``lssl`` command; returns its exit status. Bad input (a :class:`UsageError`) is one
    line on stderr and status 2; ``--debug`` (anywhere) shows the traceback instead."""
    from datamodules.errors import DataInputError
    from lightning_ssl.config.errors import UsageError

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    # user methods/datamodules in the working directory are importable by class path; appended, not
    # prepended, and after the suite's own packages are bound (an editable install resolves them after
    # every sys.path entry), so that a user's own package (say a `datamodules/` folder) cannot shadow them
    import datamodules  # noqa: F401  (cheap: its datamodules load lazily)

    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        return _dispatch(argv)
    except (UsageError, DataInputError) as err:  # bad input: one line naming it and the fix
        if debug:
            raise
        print(f"lssl {argv[0]}: {err}" if argv else f"lssl: {err}", file=sys.stderr)
        return 2


def _dispatch(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "help":
        from lightning_ssl.cli.help import print_help

        if not rest:
            print(USAGE)
            return 0
        print_help(rest[0])
        return 0
    if command == "data":
        from lightning_ssl.cli.data_stats import run

        return run(rest)
    if command in ("fit", "validate", "test"):
        from pytorch_lightning.utilities.exceptions import SIGTERMException

        from lightning_ssl.checkpoints import preemption_exit_code, stopped_line
        from lightning_ssl.cli.lightning import run_lightning_cli

        try:
            run_lightning_cli([command, *rest])
        except SIGTERMException as stop:  # preempted after its checkpoint was saved: not "finished"
            code = preemption_exit_code(stop) or 143
            print(stopped_line(f"lssl {command}", code), file=sys.stderr)
            return code
        except KeyboardInterrupt:  # before training started, or a second Ctrl-C
            print(f"lssl {command}: interrupted (Ctrl-C); the checkpoints written after each finished epoch "
                  "are kept, run the same command to resume", file=sys.stderr)
            return 130
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
