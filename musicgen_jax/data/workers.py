"""Training batches assembled in worker processes, with Grain.

    batches = worker_batches(run.batches, range(start, num_steps), num_workers=4)
    next(batches)  # the batch of step `start`, then of each step after it, in order

The batchers compute the batch of step s from (seed, s) alone, so the input pipeline is a
Grain `MapDataset` over the step numbers mapped by `train_batch`, read through
`mp_prefetch`: each worker process gets the batcher (its stores pickle as their files'
paths, so a worker reads the stores itself and holds no corpus) and makes dense the batches
of the steps Grain deals it. The pipeline's position is the step, which every checkpoint
holds: a resumed run starts the range at the restored step and sees exactly the batches an
uninterrupted run does.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

from absl import flags


def worker_batches(batches, steps: range, num_workers: int):
  """An iterator over `batches.train_batch(step)` for the steps, made by `num_workers`
  processes; call its `close()` (where it has one) when done."""
  try:
    import grain  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("--input_workers needs Grain: pip install grain (or the project's "
                      "[grain] extra), or set --input_workers=0") from e
  if not flags.FLAGS.is_parsed():  # Grain reads its own absl flags; a library call has none
    flags.FLAGS.mark_as_parsed()
  dataset = grain.MapDataset.range(steps.start, steps.stop).map(batches.train_batch)
  return iter(dataset.to_iter_dataset().mp_prefetch(
      grain.MultiprocessingOptions(num_workers=num_workers), worker_init_fn=_end_with_parent))


def _end_with_parent(worker_index: int, worker_count: int) -> None:
  """In each worker: on Linux, ask to be killed when the training process dies, so a run
  killed with SIGKILL leaves no workers behind (they would hold its output open)."""
  del worker_index, worker_count
  if not sys.platform.startswith("linux"):
    return
  try:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
  except (OSError, AttributeError):  # no prctl here: the workers end when their queue does
    return
  if os.getppid() == 1:  # the parent died before the request was made
    os._exit(1)  # pylint: disable=protected-access


_PR_SET_PDEATHSIG = 1
