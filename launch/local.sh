#!/usr/bin/env bash
# Train on this machine: every local device (CPU, one or more GPUs, a TPU host).
#   launch/local.sh --model=lstm --dataset=bach_chorales --workdir=/tmp/lstm [more train flags]
# Run it again with the same --workdir to resume from the newest checkpoint.
set -euo pipefail
exec python3 -m musicgen_jax.train "$@"
