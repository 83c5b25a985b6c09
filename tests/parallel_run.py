"""Runs toy trainings in their own process, for the device-count and kill tests.

    python tests/parallel_run.py NUM_DEVICES WORKDIR:MODE [WORKDIR:MODE ...] \
        [--num_steps=N --checkpoint_every=K ...]

The device count must be set before JAX starts, hence a separate process.
"""

import os
import sys

args = sys.argv[1:]
overrides = dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)
args = [a for a in args if not (a.startswith("--") and "=" in a)]
num_devices, runs = int(args[0]), [a.rsplit(":", 1) for a in args[1:]]
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={num_devices}"
os.environ["JAX_PLATFORMS"] = "cpu"
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [_here, os.path.dirname(_here)]

from musicgen_jax import train as train_lib  # pylint: disable=g-import-not-at-top
from toy import toy_config, toy_dataset  # pylint: disable=g-import-not-at-top

for workdir, mode in runs:
  settings = dict(parallel=mode, num_steps=3, log_every=1, eval_every=0, checkpoint_every=3)
  settings.update({k: int(v) for k, v in overrides.items()})
  config = toy_config(**settings)
  train_lib.train_and_evaluate(config, workdir, dataset=toy_dataset())
