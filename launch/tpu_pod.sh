#!/usr/bin/env bash
# Every worker of a Cloud TPU VM pod slice runs the same command; jax.distributed finds the
# coordinator, the process count and this worker's index from the TPU environment.
#   TPU_NAME=my-v4-32 ZONE=us-central2-b launch/tpu_pod.sh --model=transformer \
#       --workdir=gs://bucket/runs/tf --batch_size=1024 [more train flags]
# The repository must already be on every worker at $REPO (default ~/musicgen-jax) with the
# package installed (pip install -e ".[corpus]"). The workdir must be shared (a GCS bucket).
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME to the TPU VM name}"
: "${ZONE:?set ZONE to its zone}"
REPO=${REPO:-'~/musicgen-jax'}
flags=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all \
  --command="cd $REPO && python3 -m musicgen_jax.train$flags"
