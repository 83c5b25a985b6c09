#!/usr/bin/env bash
# N processes on this machine forming one multi-host job (CPU, gloo collectives): a real
# test of the multi-host path without a cluster. Each process reads its own rows of every
# global batch; process 0 writes config.json and metrics.jsonl; all write checkpoints.
#   launch/multihost_local.sh 2 --model=lstm --workdir=/tmp/mh [more train flags]
# Set PORT to choose the coordinator port (default: a free one).
set -euo pipefail
if [[ $# -lt 1 || ! "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 NUM_PROCESSES [train flags...]" >&2
  exit 2
fi
num=$1; shift
port=${PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
pids=()
for ((i = 0; i < num; i++)); do
  JAX_PLATFORMS=cpu python3 -m musicgen_jax.train "$@" \
    --coordinator_address="127.0.0.1:${port}" --num_processes="$num" --process_id="$i" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do
  wait "$pid" || status=$?
done
exit "$status"
