"""Device mesh, shardings, the legacy pmap helpers, and multi-host start-up.

One code path from one CPU to many hosts: the global batch is sharded over the
`data` axis of a one-dimensional mesh of every device; parameters and the
optimizer state are replicated. Each process supplies only its own rows of
every global batch.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None) -> None:
  """Starts `jax.distributed` when this is a multi-process run.

  Explicit arguments win; otherwise the environment decides (SLURM, TPU pods
  and `JAX_COORDINATOR_ADDRESS` are detected by JAX itself). A single process
  with nothing set does nothing. On CPU the gloo collectives are selected so
  that several local processes form one real multi-host job.
  """
  explicit = coordinator_address or (num_processes or 0) > 1
  from_env = any(k in os.environ for k in (
      "JAX_COORDINATOR_ADDRESS", "SLURM_JOB_ID", "TPU_WORKER_HOSTNAMES",
      "MEGASCALE_COORDINATOR_ADDRESS"))
  if not explicit and not from_env:
    return
  if explicit and (num_processes is None or process_id is None or not coordinator_address):
    raise ValueError("a multi-process run needs --coordinator_address, --num_processes and "
                     "--process_id together (or none of them, to read the environment)")
  if os.environ.get("JAX_PLATFORMS", "").startswith("cpu") or explicit:
    # Harmless on accelerators; required for CPU collectives across processes.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if explicit:
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
  else:
    jax.distributed.initialize()
  logging.info("process %d of %d, %d local / %d global devices", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())


def make_mesh() -> Mesh:
  """A one-dimensional `data` mesh over every device of every process."""
  return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over `data`; the rest replicated."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_batch_size(global_batch_size: int) -> None:
  """The global batch must split evenly over devices (and processes)."""
  devices = jax.device_count()
  if global_batch_size % devices:
    raise ValueError(
        f"--batch_size={global_batch_size} does not divide over {devices} devices; use a "
        f"multiple of {devices} (e.g. --batch_size={devices * max(1, global_batch_size // devices)})")


def global_batch(local_rows: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """Assembles the global array from this process's rows of the batch."""
  return jax.make_array_from_process_local_data(sharding, local_rows)


def pmap_split(local_rows: np.ndarray) -> np.ndarray:
  """[local_batch, ...] -> [local_devices, local_batch / local_devices, ...] for pmap."""
  n = jax.local_device_count()
  return local_rows.reshape((n, local_rows.shape[0] // n) + local_rows.shape[1:])


def replicate(tree, mesh: Mesh):
  """Puts a host pytree on every device, replicated."""
  return jax.device_put(tree, replicated(mesh))


def _host_copy(x):
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    if not x.is_fully_replicated:
      raise ValueError("to_host needs replicated arrays in a multi-process run")
    x = x.addressable_data(0)
  return np.asarray(jax.device_get(x))


def to_host(tree):
  """Fetches a replicated pytree to host numpy arrays, on every process."""
  return jax.tree.map(_host_copy, tree)
