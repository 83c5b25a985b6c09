"""Test session set-up: one persistent XLA compilation cache for every process.

The tests start several training processes (device counts, kills and restarts,
the programs end to end) that compile the same small programs; sharing the
cache across them keeps the suite's time on compiling down.
"""

import atexit
import os
import shutil
import tempfile

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _CACHE = tempfile.mkdtemp(prefix="musicgen_jax_test_xla_cache_")
  atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
