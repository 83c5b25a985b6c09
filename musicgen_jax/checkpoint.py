"""Orbax checkpoints in `W/checkpoints/`.

A checkpoint holds the train state {step, params, opt_state} (and, for runs that carry
a recurrent state across steps, that state); `restore_params` reads the parameters alone,
so scoring and sampling never build an optimizer. Keeps the latest `keep` checkpoints and
the one with the best (lowest) validation NLL. A checkpoint whose arrays are not all
finite is never written. Restoring walks back from the newest step: a damaged checkpoint
is skipped with a warning that names it, never silently replaced by a fresh start.
"""

from __future__ import annotations

import logging as logging_std
import os
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

CHECKPOINT_DIR = "checkpoints"


# orbax warnings that describe what this wrapper asks for, not a problem: a reader opens the
# checkpoints read-only, and a checkpoint written between validations has no metric.
_EXPECTED_WARNINGS = ("read_only=True", "directory is read only", "did not provide metrics")


class _QuietOrbax(logging_std.Filter):
  """Drops orbax's per-save INFO chatter and its expected warnings from the absl log; other
  warnings pass, errors without their thread's traceback (the failure reaches the user as
  one CheckpointError line)."""

  def filter(self, record):
    if "orbax" not in record.pathname:
      return True
    if record.levelno >= logging_std.ERROR:
      record.exc_info, record.exc_text, record.stack_info = None, None, None
    elif any(text in record.getMessage() for text in _EXPECTED_WARNINGS):
      return False
    return record.levelno >= logging_std.WARNING


logging.get_absl_handler().addFilter(_QuietOrbax())


class CheckpointError(RuntimeError):
  """No usable checkpoint, or one that must not be written."""


def all_finite(tree) -> bool:
  from musicgen_jax.parallel import to_host  # pylint: disable=g-import-not-at-top
  leaves = jax.tree.leaves(to_host(tree))
  return all(np.all(np.isfinite(x)) for x in leaves if np.issubdtype(x.dtype, np.inexact))


class Checkpointer:
  """A thin wrapper over `ocp.CheckpointManager` for train states."""

  def __init__(self, workdir: str, *, keep: int = 3, read_only: bool = False):
    self.directory = os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))
    policy = pp.AnyPreservationPolicy([
        pp.LatestN(n=keep),
        pp.BestN(get_metric_fn=lambda m: m["valid_nll"], reverse=True, n=1,
                 keep_checkpoints_without_metrics=False),
    ])
    # best_fn makes orbax store each checkpoint's metrics beside it (the
    # preservation policy alone keeps them in memory only), so the best step
    # survives a restart and read-only readers see it.
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policy, best_fn=lambda m: m["valid_nll"], best_mode="min",
        create=not read_only, read_only=read_only,
        enable_async_checkpointing=False, cleanup_tmp_directories=not read_only)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def restore_params(self, abstract_params, step: int):
    """The parameters of checkpoint `step` alone (the optimizer state is not read).

    `abstract_params` (e.g. `jax.eval_shape` of the model's initialiser) gives the
    structure; a checkpoint that does not fit it is an error naming the step.
    """
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = {"params": jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding), abstract_params)}
    restore_args = jax.tree.map(lambda _: ocp.ArrayRestoreArgs(sharding=sharding), target)
    try:
      restored = self._manager.restore(step, args=ocp.args.PyTreeRestore(
          item=target, restore_args=restore_args, partial_restore=True))
    except Exception as e:  # orbax/tensorstore raise many types for damaged or foreign files
      raise CheckpointError(f"checkpoint {step} in {self.directory} cannot be read as this "
                            f"model's parameters: {type(e).__name__}: {str(e)[:300]}") from e
    if not all_finite(restored["params"]):
      raise CheckpointError(f"checkpoint {step} in {self.directory} has non-finite parameters")
    return restored["params"]

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def best_step(self) -> int | None:
    """The kept step with the lowest recorded validation NLL (else the latest)."""
    best, best_nll = None, float("inf")
    for step in self.all_steps():
      metrics = self._manager.metrics(step) or {}
      nll = metrics.get("valid_nll")
      if nll is not None and nll < best_nll:
        best, best_nll = step, nll
    return best if best is not None else self.latest_step()

  def save(self, step: int, state, *, valid_nll: float | None = None) -> None:
    if not all_finite(state):
      raise CheckpointError(f"step {step}: the train state has non-finite values; "
                            "not writing a checkpoint over the last good one")
    metrics = {"valid_nll": float(valid_nll)} if valid_nll is not None else None
    try:
      self._manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics, force=True)
      self._manager.wait_until_finished()
    except Exception as e:  # orbax/tensorstore raise many types for a failed write
      # The save's other array writes failed too; asyncio would log each one's traceback
      # ("Future exception was never retrieved") when it is collected, after our one line.
      logging_std.getLogger("asyncio").setLevel(logging_std.CRITICAL)
      reason = " ".join(str(e).split())
      reason = reason if len(reason) < 240 else "... " + reason[-240:]
      raise CheckpointError(f"cannot write checkpoint {step} in {self.directory} "
                            f"(disk full or not writable?): {reason}") from e

  def restore(self, target, step: int | None = None,
              sharding: jax.sharding.Sharding | None = None,
              set_aside_damaged: bool = False) -> tuple[Any, int] | None:
    """Restores `step`, or the newest intact checkpoint; None when there is none.

    `target` is a pytree of arrays (or ShapeDtypeStructs) giving the structure.
    Arrays are restored with `sharding` (default: replicated over every device
    now present), so a checkpoint written on 8 devices restores on 1 and back.
    With `set_aside_damaged` (training), damaged checkpoints are moved to
    `W/damaged_checkpoints/` so that the run can write those steps again.
    """
    steps = self.all_steps()
    if step is not None:
      if step not in steps:
        raise CheckpointError(f"no checkpoint for step {step} in {self.directory}; "
                              f"available: {steps or 'none'}")
      candidates = [step]
    else:
      candidates = steps[::-1]
    if sharding is None:
      sharding = jax.sharding.NamedSharding(
          jax.sharding.Mesh(np.asarray(jax.devices()), ("data",)), jax.sharding.PartitionSpec())
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding), target)
    damaged = []
    for candidate in candidates:
      try:
        state = self._manager.restore(candidate, args=ocp.args.StandardRestore(abstract))
      except Exception as e:  # orbax/tensorstore raise many types for damaged files
        if step is not None:
          raise CheckpointError(f"checkpoint {candidate} in {self.directory} is damaged: "
                                f"{type(e).__name__}: {e}") from e
        logging.warning("checkpoint %d in %s is damaged (%s: %s); trying an older one",
                        candidate, self.directory, type(e).__name__, str(e)[:200])
        damaged.append(candidate)
        continue
      if not all_finite(state):
        logging.warning("checkpoint %d has non-finite values; trying an older one", candidate)
        damaged.append(candidate)
        continue
      if set_aside_damaged:
        self._set_aside(damaged)
      return state, candidate
    if candidates:
      raise CheckpointError(f"every checkpoint in {self.directory} is damaged "
                            f"(steps {candidates}); remove the folder to start afresh")
    return None

  def _set_aside(self, steps: list[int]) -> None:
    if not steps or jax.process_index() != 0:
      return
    aside = os.path.join(os.path.dirname(self.directory), "damaged_checkpoints")
    os.makedirs(aside, exist_ok=True)
    for step in steps:
      target = os.path.join(aside, f"{step}-{int(time.time())}")
      os.replace(os.path.join(self.directory, str(step)), target)
      logging.warning("moved damaged checkpoint %d to %s", step, target)
    self._manager.reload()

  def close(self) -> None:
    self._manager.close()
