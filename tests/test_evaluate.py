"""The evaluation protocol: hand-computed NLL, and each model's context rule."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musicgen_jax import evaluate as eval_lib
from musicgen_jax import losses
from musicgen_jax.models import (CategoricalDuration, FrameDistribution, IndependentNotes,
                                 ModelConfig, apply_model, init_params)
from toy import toy_frames

PIECES = [toy_frames(1, 21), toy_frames(2, 9), toy_frames(3, 2), toy_frames(4, 1)]


def fixed_apply(cfg, params, frames, *, train=False, rng=None, lengths=None, carry=None):
  """A 'model' with known outputs: note 18 at p = 3/4, every other note at 1/4;
  a uniform duration distribution."""
  del params, train, rng, lengths
  steps = frames.shape[1] if cfg.model != "bilstm" else 1
  shape = frames.shape[:1] + (steps,)
  logits = jnp.full(shape + (106,), -jnp.log(3.0)).at[..., 18].set(jnp.log(3.0))
  duration = CategoricalDuration(jnp.zeros(shape + (cfg.max_duration_steps,)), 12)
  pred = FrameDistribution(IndependentNotes(logits), duration)
  return pred if carry is None else (pred, carry)


def hand_computed(pieces, num_duration_classes):
  nll_notes, tp, fp, fn, count = 0.0, 0, 0, 0, 0
  for frames in pieces:
    for target in frames[1:]:
      notes = target[:106] > 0.5
      p = np.full(106, 0.25)
      p[18] = 0.75
      nll_notes += -np.sum(np.where(notes, np.log(p), np.log(1 - p)))
      predicted = p > 0.5
      tp += int(np.sum(predicted & notes))
      fp += int(np.sum(predicted & ~notes))
      fn += int(np.sum(~predicted & notes))
      count += 1
  return {"nll_notes": nll_notes / count, "nll_duration": np.log(num_duration_classes),
          "note_accuracy": tp / (tp + fp + fn), "num_frames": count}


@pytest.mark.parametrize("model", ["lstm", "transformer", "bilstm"])
def test_nll_equals_hand_computed_value(model, monkeypatch):
  # A config no other test uses, so the compiled scorer is built with the fake model.
  cfg = ModelConfig(model=model, hidden_size=3, num_layers=1, seq_len=4, max_duration_steps=10)
  monkeypatch.setattr(eval_lib, "apply_model", fixed_apply)
  eval_lib._scorer.cache_clear()
  try:
    result = eval_lib.evaluate_pieces(cfg, None, PIECES, batch_size=2)
  finally:
    eval_lib._scorer.cache_clear()
  expected = hand_computed(PIECES, 10)
  assert result["num_frames"] == expected["num_frames"] == 20 + 8 + 1
  assert result["nll_notes"] == pytest.approx(expected["nll_notes"], rel=1e-6)
  assert result["nll_duration"] == pytest.approx(expected["nll_duration"], rel=1e-6)
  assert result["nll"] == pytest.approx(expected["nll_notes"] + expected["nll_duration"],
                                        rel=1e-6)
  assert result["note_accuracy"] == pytest.approx(expected["note_accuracy"])


def naive_scores(cfg, params, pieces):
  """Scores target t from exactly the protocol's context, without chunks.

  rnn/lstm and the Transformer: one call on the whole piece (the Transformer's layers
  each attend to the last seq_len positions, as when sampling); bilstm: the seq_len
  frames before each target, one target at a time.
  """
  total, count = 0.0, 0
  apply = jax.jit(lambda p, x, lengths: apply_model(cfg, p, x, lengths=lengths))
  for frames in pieces:
    if cfg.model != "bilstm":
      pred = apply(params, jnp.asarray(frames[None, :-1]), None)
      terms = losses.frame_terms(pred, jnp.asarray(frames[None, 1:]))
      total += float(jnp.sum(terms["nll"]))
      count += len(frames) - 1
      continue
    for t in range(1, len(frames)):
      start = max(0, t - cfg.seq_len)
      window = np.zeros((1, cfg.seq_len, 107), np.float32)
      window[0, :t - start] = frames[start:t]
      pred = apply(params, jnp.asarray(window), jnp.asarray([t - start], jnp.int32))
      pred = jax.tree.map(lambda a: a[:, 0], pred)
      total += float(losses.frame_terms(pred, jnp.asarray(frames[None, t]))["nll"][0])
      count += 1
  return total / count


@pytest.mark.parametrize("model", ["lstm", "transformer", "bilstm"])
def test_protocol_context_per_model(model):
  # Two layers and chunks shorter than the pieces: the state (lstm) or the receptive
  # field (transformer) must carry across chunk boundaries exactly.
  cfg = ModelConfig(model=model, hidden_size=8, num_layers=2, num_heads=2, seq_len=5,
                    max_duration_steps=12, note_head="independent")  # naive_scores' head
  params = init_params(cfg, jax.random.key(0))
  pieces = [toy_frames(7, 37), toy_frames(8, 6), toy_frames(9, 20)]
  expected = naive_scores(cfg, params, pieces)
  result_4 = eval_lib.evaluate_pieces(cfg, params, pieces, batch_size=2, chunk=4)
  for chunk in (4, 512):
    result = eval_lib.evaluate_pieces(cfg, params, pieces, batch_size=2, chunk=chunk)
    assert result["num_frames"] == 36 + 5 + 19
    assert result["nll"] == pytest.approx(expected, rel=1e-5), chunk
  # Pieces held sparse (as a loaded dataset holds them) score the same, made dense per use.
  from musicgen_jax.data import Piece  # pylint: disable=g-import-not-at-top
  from musicgen_jax.data.sparse import SparseFrames  # pylint: disable=g-import-not-at-top
  store = SparseFrames.from_dense(pieces)
  held = [Piece(str(i), sparse=(store, i)) for i in range(len(pieces))]
  assert eval_lib.evaluate_pieces(cfg, params, held, batch_size=2, chunk=4) == result_4


def test_empty_input_is_an_error():
  cfg = ModelConfig(hidden_size=4, num_layers=1)
  with pytest.raises(ValueError, match="no piece has two or more frames"):
    eval_lib.evaluate_pieces(cfg, None, [toy_frames(0, 1)])


@pytest.mark.parametrize("model", ["lstm", "transformer"])
def test_the_sampler_sees_what_the_evaluator_scores(model):
  """Feeding a piece several windows long through the sampler's step function predicts
  exactly what the (chunked) evaluator scores: one context definition for both."""
  from musicgen_jax.models import decode_step, init_carry  # pylint: disable=g-import-not-at-top
  cfg = ModelConfig(model=model, hidden_size=8, num_layers=2, num_heads=2, seq_len=5,
                    max_duration_steps=12)
  params = init_params(cfg, jax.random.key(3))
  piece = toy_frames(11, 37)  # more than 7 windows of seq_len
  step = jax.jit(lambda frame, carry: decode_step(cfg, params, frame, carry))
  carry, total = init_carry(cfg, 1), 0.0
  for t in range(len(piece) - 1):
    pred, carry = step(jnp.asarray(piece[None, t]), carry)
    total += float(losses.frame_terms(pred, jnp.asarray(piece[None, t + 1]))["nll"][0])
  scored = eval_lib.evaluate_pieces(cfg, params, [piece], chunk=4)
  assert scored["nll"] == pytest.approx(total / (len(piece) - 1), rel=1e-5)
