"""What the experiment runners share: running the programs, recording results, the machine.

The runners (`run_benchmarks`, `run_study`) are clients of the library: they start the
project's own programs (`python -m musicgen_jax.train ...`) as subprocesses, read trained
runs with `workdir.load_run`, and keep one JSON result per finished run so that a second
invocation reuses it (`Results`).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import subprocess
import sys
import time

from absl import logging

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_flagfile(path: str) -> dict[str, str]:
  """--name=value lines of an absl flagfile (comments skipped) -> {name: value};
  a bare --name is 'true', --noname 'false'."""
  values = {}
  with open(path) as f:
    for line in f:
      line = line.strip()
      if not line.startswith("--"):
        continue
      name, equals, value = line[2:].partition("=")
      if not equals:
        name, value = (name[2:], "false") if name.startswith("no") else (name, "true")
      values[name] = value
  return values


def flagfile_digest(path: str) -> str:
  """A digest of a flagfile's settings: comments and blank lines do not count, so a recipe's
  notes (e.g. its measured result) can be edited without invalidating the runs made with it."""
  with open(path) as f:
    settings = [line.strip() for line in f if line.strip() and not line.strip().startswith("#")]
  return hashlib.sha256("\n".join(settings).encode()).hexdigest()[:16]


def run_program(module: str, args: list[str], log_path: str) -> tuple[dict, float]:
  """Runs `python -m module args` from the repository root; (its last JSON line, seconds).

  stderr (the program's log) is appended to log_path. A failure raises RuntimeError
  naming the log.
  """
  cmd = [sys.executable, "-m", module] + args
  logging.info("%s", " ".join(["python"] + cmd[1:]))
  os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
  start = time.perf_counter()
  with open(log_path, "a") as log:
    proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True,
                          check=False)
  seconds = time.perf_counter() - start
  if proc.returncode != 0:
    raise RuntimeError(f"python -m {module} failed ({proc.returncode}); see {log_path}")
  lines = proc.stdout.strip().splitlines()
  return (json.loads(lines[-1]) if lines else {}), seconds


def command_text(module: str, args: list[str]) -> str:
  return " ".join(["python", "-m", module] + args)


class Results:
  """One JSON file per finished run (W/<name>.json), reused while its key is unchanged."""

  def __init__(self, name: str):
    self.name = name

  def path(self, workdir: str) -> str:
    return os.path.join(workdir, f"{self.name}.json")

  def load(self, workdir: str, key: str) -> dict | None:
    """The stored result when it was made with the same `key` (e.g. a flagfile's digest)."""
    path = self.path(workdir)
    if not os.path.exists(path):
      return None
    with open(path) as f:
      result = json.load(f)
    return result if result.get("key") == key else None

  def save(self, workdir: str, key: str, result: dict) -> dict:
    result = dict(result, key=key)
    with open(self.path(workdir) + ".tmp", "w") as f:
      json.dump(result, f, indent=1)
    os.replace(self.path(workdir) + ".tmp", self.path(workdir))
    return result


def metrics_records(workdir: str) -> list[dict]:
  from musicgen_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  return workdir_lib.MetricsLog(workdir).records()


def load_average() -> str:
  try:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())
  except OSError:
    return "?"


def machine() -> str:
  import jax  # pylint: disable=g-import-not-at-top
  return (f"{platform.machine()}, {os.cpu_count()} CPU cores, jax {jax.__version__} on "
          f"{jax.devices()[0].platform}")


def now() -> str:
  return datetime.datetime.now().strftime("%Y-%m-%d %H:%M")


def invocation() -> str:
  """How this runner was started, as a command to copy."""
  module = os.path.relpath(sys.argv[0], REPO).removesuffix(".py").replace(os.sep, ".")
  return " ".join(["python", "-m", module] + sys.argv[1:])


def judge(generated, real, length: int) -> dict | None:
  """`musicgen_jax.judge.two_sample_test` of generated against real pieces in excerpts of
  `length` frames, or None (logged) where it cannot run: no scikit-learn, too little music."""
  from musicgen_jax import judge as judge_lib  # pylint: disable=g-import-not-at-top
  try:
    return judge_lib.two_sample_test(generated, real, length=length)
  except (ImportError, ValueError) as e:
    logging.warning("no judge: %s", e)
    return None


def judge_cell(verdict: dict | None) -> str:
  """'0.99 +- 0.01' (balanced accuracy and spread), or '-'."""
  if not verdict:
    return "-"
  return f"{verdict['balanced_accuracy']:.2f} ± {verdict['spread']:.2f}"


def fmt(value, digits: int = 3) -> str:
  if value is None or (isinstance(value, float) and value != value):
    return "-"
  return f"{value:.{digits}f}"
