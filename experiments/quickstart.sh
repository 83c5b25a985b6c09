#!/usr/bin/env bash
# The main job: encode the default corpus (Bach chorales from music21, cached after the
# first run), train a small LSTM for a few minutes on a CPU, score it on the held-out test
# pieces, and sample four continuations of a held-out chorale as MIDI (+ piano-roll PNGs).
#   bash experiments/quickstart.sh [WORKDIR] [extra train flags...]
# Expected time on 2 CPU cores: ~2 min to encode (first run only), ~4 min to train.
set -euo pipefail
workdir=${1:-runs/quickstart}
shift || true
python3 -m musicgen_jax.train --workdir="$workdir" --model=lstm --dataset=bach_chorales \
  --hidden_size=128 --num_layers=2 --seq_len=48 --batch_size=32 --num_steps=1500 \
  --learning_rate=3e-3 --transpose_range=5 --log_every=100 --eval_every=500 \
  --checkpoint_every=500 "$@"
python3 -m musicgen_jax.evaluate --workdir="$workdir" --split=test
python3 -m musicgen_jax.sample --workdir="$workdir" --prime_split=test --prime_frames=8 \
  --num_frames=128 --num_samples=4 --out_dir="$workdir/samples"
echo
echo "checkpoints and metrics: $workdir (config.json, metrics.jsonl, checkpoints/)"
echo "test scores:             $workdir/eval_test.json"
echo "samples:                 $workdir/samples/sample_*.mid (and .png, .json)"
