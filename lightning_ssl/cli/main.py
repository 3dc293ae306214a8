"""The ``lssl`` command: one entry point, sub-commands dispatched by their first word."""

from __future__ import annotations

import difflib
import errno
import importlib
import os
import sys

from datamodules.errors import DataInputError
from lightning_ssl.config.errors import UsageError

USAGE = """usage: lssl COMMAND ...

  fit | validate | test   LightningCLI (YAML configs, --model / --data by class name or path;
                          --help: the common options, --help-all: every Trainer option)
  probe CHECKPOINT        offline evaluation of a checkpoint (linear probes, kNN)
  data stats NAME         per-class counts, imbalance ratio, groups, probe/test sizes
  data card NAME          the dataset's card (protocol, source, mean/std, group rule)
  dnc                     the Divide-and-Contrast pipeline (resumable, stage by stage)
  sweep SPEC              expand and launch a benchmark sweep (local, slurm, wandb; --dry-run)
  report SPEC|DIR         tables and plots from a sweep's results
  bench                   the default benchmark on the embedded dataset
  help NAME               a method's or dataset's options (also: lssl fit --model NAME --help)

  --debug                 show the traceback of a usage error (otherwise one line, exit status 2)
  --verbose               fit, sweep, dnc, bench: Lightning's model summaries, progress bars, tips and
                          repeated warnings (quiet by default)
"""
COMMANDS = ("fit", "validate", "test", "probe", "data", "dnc", "sweep", "report", "bench", "help")
# file-system errors that are the user's to fix (a full disk, a folder not writable, a wrong path):
# one line naming the file, not a traceback
FILE_ERRORS = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.ENOENT,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.ENAMETOOLONG,
}
# where each command writes, for the fix of a file-system error
OUTPUT_OPTION = {
    "fit": "--trainer.default_root_dir DIR",
    "validate": "--trainer.default_root_dir DIR",
    "test": "--trainer.default_root_dir DIR",
    "sweep": "--results DIR --work DIR",
    "bench": "--results DIR --work DIR",
    "dnc": "--work_dir DIR",
    "probe": "--out FILE",
    "report": "--out DIR",
    "data": "--plot FILE",
}


def main(argv: list[str] | None = None) -> int:
    """Run one ``lssl`` command; returns its exit status. Bad input (a :class:`UsageError`) is one
    line on stderr and status 2; ``--debug`` (anywhere) shows the traceback instead."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    # user methods/datamodules in the working directory are importable by class path; appended, not
    # prepended, and after the suite's own packages are bound (by this module's imports of datamodules and
    # lightning_ssl: an editable install resolves them after every sys.path entry), so that a user's own
    # package (say a `datamodules/` folder) cannot shadow them
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    command = argv[0] if argv else ""
    try:
        code = _dispatch(argv)
        sys.stdout.flush()  # a closed pipe shows here, not at the interpreter's exit
        return code
    except BrokenPipeError:  # `lssl help NAME | head`: the reader left; nothing more to say
        _detach_stdout()
        return 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader closed the pipe
    except (UsageError, DataInputError) as err:  # bad input: one line naming it and the fix
        if debug:
            raise
        _error(command, one_line(err))
        return 2
    except OSError as err:
        from lightning_ssl.checkpoints import CheckpointWriteError  # noqa: PLC0415 (loads torch, Lightning: 5 s)

        if debug or not (err.errno in FILE_ERRORS or isinstance(err, CheckpointWriteError)):
            raise
        _error(command, file_error(err, command) if err.errno in FILE_ERRORS else one_line(err))
        return 2


def one_line(err: BaseException) -> str:
    """The message of a bad-input error on one line. An error raised in a DataLoader worker comes
    back with the worker's traceback inside its message: its last line is the original message."""
    text = str(err).strip()
    if "Traceback (most recent call last)" in text:
        text = text.splitlines()[-1].split(": ", 1)[-1]
    return " ".join(text.split())


def file_error(err: OSError, command: str) -> str:
    """``cannot write runs/x/last.ckpt: No space left on device; free space or ...``."""
    what = f" {err.filename}" if err.filename else ""
    reason = err.strerror or str(err)
    where = OUTPUT_OPTION.get(command)
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = (
            "free some space" + (f" or write elsewhere ({where})" if where else "") + "; what was saved before is kept"
        )
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "run from a folder you can write to" + (f" or pass {where}" if where else "")
    else:
        fix = "check the path" + (f" (or pass {where})" if where else "")
    return f"{reason}:{what}; {fix}"


def _error(command: str, message: str) -> None:
    prefix = f"lssl {command}: " if command in COMMANDS else "lssl: "
    print(f"{prefix}{message}", file=sys.stderr)


def _detach_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush does not raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout replaced (tests) or already closed
        pass


def _dispatch(argv: list[str]) -> int:
    """Run one command. Each command's module is imported only when it runs: they load torch and
    Lightning (5-9 s), which ``lssl --help``, ``lssl help`` and the ``--help`` of sweep, report and
    bench do without (0.2-0.5 s)."""
    if argv and argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if not argv:
        raise UsageError(f"no command given; the commands: {', '.join(COMMANDS)} (lssl --help describes them)")
    command, rest = argv[0], argv[1:]
    if command == "help":
        if not rest or rest[0] in ("-h", "--help"):
            print(USAGE)
            return 0
        from lightning_ssl.cli.help import print_help  # noqa: PLC0415 (see _dispatch)

        print_help(rest[0])
        return 0
    if command in ("sweep", "report", "bench") and {"-h", "--help"} & set(rest):
        from lightning_ssl.cli.parsers import HELP_PARSERS  # noqa: PLC0415 (see _dispatch)

        HELP_PARSERS[command]().print_help()
        return 0
    if command == "data":
        from lightning_ssl.cli.data_stats import run  # noqa: PLC0415 (see _dispatch)

        return run(rest)
    if command in ("fit", "validate", "test"):
        from pytorch_lightning.utilities.exceptions import SIGTERMException  # noqa: PLC0415 (see _dispatch)

        from lightning_ssl.checkpoints import preemption_exit_code, stopped_line  # noqa: PLC0415 (see _dispatch)
        from lightning_ssl.cli.lightning import run_lightning_cli  # noqa: PLC0415 (see _dispatch)

        try:
            run_lightning_cli([command, *rest])
        except SIGTERMException as stop:  # preempted after its checkpoint was saved: not "finished"
            code = preemption_exit_code(stop) or 143
            print(stopped_line(f"lssl {command}", code), file=sys.stderr)
            return code
        except KeyboardInterrupt:  # before training started, or a second Ctrl-C
            print(
                f"lssl {command}: interrupted (Ctrl-C); the checkpoints written after each finished epoch "
                "are kept, run the same command to resume",
                file=sys.stderr,
            )
            return 130
        return 0
    if command == "probe":
        from lightning_ssl.cli.probe import run  # noqa: PLC0415 (see _dispatch)

        return run(rest)
    if command == "sweep" and not _spec_file_readable(rest):
        return 2
    if command in ("dnc", "sweep", "report"):
        return importlib.import_module(f"lightning_ssl.cli.{command}").run(rest)
    if command == "bench":
        from lightning_ssl.cli.bench import run  # noqa: PLC0415 (see _dispatch)

        return run(rest)
    close = difflib.get_close_matches(command, COMMANDS, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UsageError(f"unknown command {command!r}; {hint}the commands: {', '.join(COMMANDS)} (lssl --help)")


def _spec_file_readable(argv: list[str]) -> bool:
    """``lssl sweep``'s spec file exists and is valid YAML; else its one-line error, printed before the
    sweep's modules load torch and Lightning (a typo is reported in a second, not after 8)."""
    from lightning_ssl.cli.parsers import sweep_parser  # noqa: PLC0415 (see _dispatch)
    from lightning_ssl.sweep.specfile import read_spec_file  # noqa: PLC0415 (see _dispatch)

    try:
        read_spec_file(sweep_parser().parse_args(argv).spec)
    except (ValueError, FileNotFoundError) as err:
        _error("sweep", str(err))
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
