"""A training workdir W as a value: its config, its checkpoints' parameters, its owner.

    run = load_run("runs/lstm")            # TrainedRun(config, params, step, workdir)
    prediction = apply_model(run.config.model, run.params, frames)

Scoring and sampling read a run through `load_run`: the parameters alone are restored
(no optimizer is built) and nothing here imports the trainer. The trainer takes
`WorkdirLock` before it writes anything, so one process group owns a W at a time.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import socket
import time
from typing import Any

import jax

from musicgen_jax import checkpoint as ckpt_lib
from musicgen_jax.config import CONFIG_FILE, RunConfig
from musicgen_jax.models import init_params

METRICS_FILE = "metrics.jsonl"
LOCK_FILE = "train.lock"


def check_writable_dir(path: str, flag: str) -> None:
  """Raises a ValueError naming the flag unless `path` is, or can be made as, a writable
  folder; creates nothing (inputs are checked before anything is written)."""
  path = os.path.abspath(os.path.expanduser(path))
  existing = path
  while not os.path.exists(existing) and os.path.dirname(existing) != existing:
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise ValueError(f"cannot write to --{flag}={path} ({existing} is not a folder); choose "
                     "another folder")
  if not os.access(existing, os.W_OK | os.X_OK):
    raise ValueError(f"cannot write to --{flag}={path} ({existing} is not writable); choose "
                     "another folder")


def ensure_writable_dir(path: str, flag: str) -> None:
  """Creates `path` and proves it writable, or raises a ValueError naming the flag."""
  try:
    os.makedirs(path, exist_ok=True)
    probe = os.path.join(path, f".write_test_{os.getpid()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise ValueError(f"cannot write to --{flag}={path} ({e.strerror or e}); choose "
                     "another folder") from e


def load_config(workdir: str) -> RunConfig:
  """W/config.json; FileNotFoundError naming what to do when W has none."""
  if not workdir or not os.path.isdir(workdir):
    raise FileNotFoundError(f"--workdir={workdir} does not exist; give a training workdir")
  config = RunConfig.load(workdir)
  if config is None:
    raise FileNotFoundError(f"{workdir} has no {CONFIG_FILE}: train there first "
                            "(python -m musicgen_jax.train --workdir=...)")
  return config


def checkpoint_steps(workdir: str) -> list[int]:
  """The finished checkpoint steps in W (orbax names each folder by its step), sorted."""
  directory = os.path.join(workdir, ckpt_lib.CHECKPOINT_DIR)
  if not os.path.isdir(directory):
    return []
  return sorted(int(name) for name in os.listdir(directory)
                if name.isdigit() and os.path.isdir(os.path.join(directory, name)))


def check_step(workdir: str, step: int | None = None) -> list[int]:
  """The checkpoint steps; FileNotFoundError when there is none (or not `step`)."""
  steps = checkpoint_steps(workdir)
  if not steps:
    raise FileNotFoundError(f"{workdir} has no checkpoint in {ckpt_lib.CHECKPOINT_DIR}/; train "
                            "there first or check --workdir")
  if step is not None and step not in steps:
    raise FileNotFoundError(f"{workdir} has no checkpoint for --step={step}; available: "
                            f"{', '.join(map(str, steps))}")
  return steps


@dataclasses.dataclass(frozen=True)
class TrainedRun:
  """A trained model: its settings, its parameters and the step they come from."""

  config: RunConfig
  params: Any
  step: int
  workdir: str


def load_run(workdir: str, step: int | None = None) -> TrainedRun:
  """The parameters of `step`, else of the best-by-validation (else latest) checkpoint."""
  config = load_config(workdir)
  check_step(workdir, step)
  checkpointer = ckpt_lib.Checkpointer(workdir, read_only=True)
  try:
    if step is None:
      step = checkpointer.best_step()
    abstract = jax.eval_shape(lambda: init_params(config.model, jax.random.key(0)))
    params = checkpointer.restore_params(abstract, step)
  finally:
    checkpointer.close()
  return TrainedRun(config=config, params=params, step=int(step), workdir=workdir)


class MetricsLog:
  """W/metrics.jsonl: one JSON object per logged step, written by process 0 only."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, METRICS_FILE)
    self.enabled = jax.process_index() == 0

  def append(self, record: dict) -> None:
    if self.enabled:
      with open(self.path, "a") as f:
        f.write(json.dumps(record, allow_nan=False) + "\n")

  def truncate(self, last_step: int) -> None:
    """On resume, drops records past the restored step (they will be logged again)."""
    if not self.enabled or not os.path.exists(self.path):
      return
    with open(self.path) as f:
      kept = [line for line in f
              if line.strip() and json.loads(line).get("step", 0) <= last_step]
    with open(self.path + ".tmp", "w") as f:
      f.writelines(kept)
    os.replace(self.path + ".tmp", self.path)

  def records(self) -> list[dict]:
    if not os.path.exists(self.path):
      return []
    with open(self.path) as f:
      return [json.loads(line) for line in f if line.strip()]


class WorkdirBusyError(RuntimeError):
  """Another training process owns the workdir."""


class WorkdirLock:
  """An exclusive lock on W for one training process group (process 0 holds it).

  An OS lock (flock) on W/train.lock, which the kernel releases when its holder dies, so a
  lock left by a killed run is taken over (and said so); the file names the holder's pid
  and host for the error a second trainer gets.
  """

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, LOCK_FILE)
    self._fd = None

  def __enter__(self) -> WorkdirLock:
    if jax.process_index() != 0:
      return self
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      holder = _read_holder(fd)
      os.close(fd)
      raise WorkdirBusyError(
          f"{os.path.dirname(self.path)} is being trained by pid {holder.get('pid', '?')} on "
          f"{holder.get('host', '?')} (since {holder.get('since', '?')}); wait for it to "
          "finish or stop it, or use another --workdir") from None
    previous = _read_holder(fd)
    if previous.get("pid"):
      from absl import logging  # pylint: disable=g-import-not-at-top
      logging.warning("taking over %s: its holder, pid %s on %s, is no longer running",
                      self.path, previous["pid"], previous.get("host", "?"))
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                              "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)
    self._fd = fd
    return self

  def __exit__(self, *exc) -> None:
    if self._fd is not None:
      os.ftruncate(self._fd, 0)  # an empty file: released cleanly
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None


def _read_holder(fd: int) -> dict:
  try:
    data = os.pread(fd, 4096, 0)
    return json.loads(data.decode()) if data.strip() else {}
  except (OSError, ValueError):
    return {}
