"""What every program shares: flags shown in --help, and one way to fail.

    def main(flag_values): ...            # the program; raises on bad input
    def run(): cli.run(main, define_flags)

A program's failures reach the user as one line, `error: <what to change>`, on stderr,
with exit status 1 (2 for a misused command line); work stopped by Ctrl-C or SIGTERM says
where, as `stopped: <where, and how to go on>`, with status 130 or 143: no traceback
and no help text for a bad flag. `--help` lists every flag the program defines.
"""

from __future__ import annotations

import logging as logging_std
import sys
from typing import Callable

from absl import app, flags, logging

INTERRUPTED_STATUS = 130


class Failure(Exception):
  """An error the user can act on; its message says what to change."""


class UsageError(Failure):
  """A misused command line (a missing flag, a stray argument)."""


class Interrupted(Failure):
  """Ctrl-C or SIGTERM; the message says where the work stopped and how to go on.

  Reported as `stopped: <message>` with `status` (130 for Ctrl-C, 143 for SIGTERM).
  """

  def __init__(self, message: str, status: int = INTERRUPTED_STATUS):
    super().__init__(message)
    self.status = status


def one_line(error: BaseException) -> str:
  return " ".join(str(error).split()) or type(error).__name__


def require(flag_values: flags.FlagValues, *names: str) -> None:
  for name in names:
    if flag_values[name].value in (None, ""):
      raise UsageError(f"--{name} is required ({flag_values[name].help.rstrip('.')})")


def fail(message: str, status: int = 1, prefix: str = "error") -> None:
  sys.stderr.write(f"{prefix}: {message}\n")
  sys.stderr.flush()
  sys.exit(status)


# What a program raises for bad input: each becomes one line.
USER_ERRORS = (Failure, ValueError, OSError, RuntimeError, ImportError)


def _quiet_unraisable(unraisable) -> None:
  """Errors Python cannot raise (e.g. a library's callback into a closed event loop after a
  failed write) go to the debug log, not to the user's terminal as tracebacks."""
  logging.debug("ignored in %r: %s", unraisable.object, unraisable.exc_value)


def call(main: Callable[..., None], flag_values: flags.FlagValues, argv: list[str],
         positional: bool = False) -> None:
  """Runs `main(flag_values)` (`main(flag_values, args)` for a program with positional
  arguments) with parsed flags, turning its errors into one line each."""
  sys.unraisablehook = _quiet_unraisable
  if len(argv) > 1 and not positional:
    fail(f"unexpected arguments {' '.join(argv[1:])}; flags look like --name=value", 2)
  try:
    if positional:
      main(flag_values, argv[1:])
    else:
      main(flag_values)
  except KeyboardInterrupt:
    fail("interrupted", INTERRUPTED_STATUS)
  except Interrupted as e:
    fail(one_line(e), e.status, prefix="stopped")
  except UsageError as e:
    fail(one_line(e), 2)
  except USER_ERRORS as e:
    logging.debug("error detail", exc_info=True)
    fail(one_line(e))


# Loggers whose INFO lines say nothing a user acts on ("Unable to initialize backend 'tpu'"
# on every machine without one); their warnings still show.
QUIET_LOGGERS = ("jax._src.xla_bridge",)


def run(main: Callable[..., None], define_flags: Callable[[flags.FlagValues], None],
        flag_values: flags.FlagValues = flags.FLAGS, positional: bool = False) -> None:
  """Defines the program's flags (listed by --help), parses them and calls main."""
  for name in QUIET_LOGGERS:
    logging_std.getLogger(name).setLevel(logging_std.WARNING)
  before = set(flag_values)
  define_flags(flag_values)
  for name in sorted(set(flag_values) - before):
    flag_values.register_key_flag_for_module(sys.argv[0], flag_values[name])
  app.run(lambda argv: call(main, flag_values, argv, positional))
