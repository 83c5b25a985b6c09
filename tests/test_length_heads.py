"""Note lengths and metre in the models: exact likelihoods, the sampler drawing what they score."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from musicgen_jax import encoding, sampling
from musicgen_jax.data import batches
from musicgen_jax.data.config import DataConfig
from musicgen_jax.models import registry
from musicgen_jax.models.config import ModelConfig
from musicgen_jax.models.distributions import IndependentNotes, LengthHead, NadeNotes

PITCHES = (40, 45)  # the only note columns that may sound in the enumerated heads
CLASSES = 3  # lengths of 1, 2 or 3 quarters (one step per quarter)
HIDDEN = 5


def _heads(kind: str, batch: int = 1):
  """A note head with lengths whose mass lies on two pitches, random weights."""
  rng = np.random.default_rng(7)
  normal = lambda *shape, scale=1.0: jnp.asarray(rng.normal(0, scale, shape), jnp.float32)
  visible = np.full((batch, encoding.NUM_NOTES), -40.0, np.float32)
  visible[:, list(PITCHES)] = [0.3, -0.4]
  lengths = LengthHead(
      bias=jnp.broadcast_to(normal(CLASSES), (batch, CLASSES)),
      w_pitch=normal(encoding.NUM_NOTES, HIDDEN), w_out=normal(HIDDEN, CLASSES, scale=2.0),
      pitch_bias=normal(encoding.NUM_NOTES, CLASSES),
      hidden_bias=(jnp.broadcast_to(normal(HIDDEN), (batch, HIDDEN)) if kind == "independent"
                   else None),
      w_len_in=normal(CLASSES, HIDDEN, scale=2.0) if kind == "nade" else None,
      steps_per_quarter=1)
  if kind == "independent":
    return IndependentNotes(logits=jnp.asarray(visible), lengths=lengths)
  return NadeNotes(visible_bias=jnp.asarray(visible),
                   hidden_bias=jnp.broadcast_to(normal(HIDDEN), (batch, HIDDEN)),
                   w_in=normal(encoding.NUM_NOTES, HIDDEN, scale=2.0),
                   w_out=normal(HIDDEN, encoding.NUM_NOTES, scale=2.0), lengths=lengths)


def _outcomes():
  """Every (notes [106], lengths [106]) the two-pitch heads can give."""
  for on in itertools.product((0, 1), repeat=len(PITCHES)):
    sounding = [p for p, o in zip(PITCHES, on) if o]
    for classes in itertools.product(range(CLASSES), repeat=len(sounding)):
      notes, lengths = np.zeros(encoding.NUM_NOTES), np.zeros(encoding.NUM_NOTES)
      for p, c in zip(sounding, classes):
        notes[p] = 1
        lengths[p] = c + 1.0
      yield notes, lengths


def _joint_probabilities(head) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  outcomes = list(_outcomes())
  notes = jnp.asarray(np.stack([n for n, _ in outcomes]), jnp.float32)
  lengths = jnp.asarray(np.stack([l for _, l in outcomes]), jnp.float32)
  broadcast = jax.tree.map(
      lambda x: jnp.broadcast_to(x[:1], (len(outcomes),) + x.shape[1:])
      if x.ndim and x.shape[0] == 1 else x, head)
  logits, nll_length = broadcast.scores(notes, lengths)
  nll_notes = optax.sigmoid_binary_cross_entropy(logits, notes).sum(-1)
  return np.asarray(notes), np.asarray(lengths), np.exp(-np.asarray(nll_notes + nll_length))


@pytest.mark.parametrize("kind", ["nade", "independent"])
def test_the_length_likelihood_is_a_distribution_that_the_sampler_draws(kind):
  notes, lengths, probs = _joint_probabilities(_heads(kind))
  assert len(probs) == 16
  np.testing.assert_allclose(probs.sum(), 1.0, atol=1e-5)  # exact: every outcome, mass 1
  draws = 40_000
  head = _heads(kind, batch=draws)
  key_notes, key_lengths = jax.random.split(jax.random.key(3))
  uniforms = jax.random.uniform(key_notes, (draws, encoding.NUM_NOTES))
  length_uniforms = jax.random.uniform(key_lengths, (draws, encoding.NUM_NOTES))
  got_notes, got_lengths = head.draw_with_lengths(uniforms, length_uniforms, temperature=1.0)
  got_notes, got_lengths = np.asarray(got_notes), np.asarray(got_lengths)
  np.testing.assert_array_equal(got_lengths > 0, got_notes > 0)
  assert set(np.unique(got_lengths)) <= {0.0, 1.0, 2.0, 3.0}
  for n, l, p in zip(notes, lengths, probs):
    hits = np.all(got_notes == n, axis=1) & np.all(got_lengths == l, axis=1)
    assert abs(hits.mean() - p) < 4 * np.sqrt(p * (1 - p) / draws) + 1e-3, (n.nonzero(), p)


def test_the_nade_conditions_later_notes_on_earlier_lengths():
  """The pitch above depends on the length drawn below it (w_len_in joins the state)."""
  head = _heads("nade", batch=CLASSES)
  notes = np.zeros((CLASSES, encoding.NUM_NOTES), np.float32)
  notes[:, list(PITCHES)] = 1
  lengths = notes.copy()
  lengths[:, PITCHES[0]] = np.arange(1, CLASSES + 1)
  logits = np.asarray(head.conditional_logits(jnp.asarray(notes), jnp.asarray(lengths)))
  assert np.ptp(logits[:, PITCHES[1]]) > 1e-3  # the upper pitch's logit moves with it
  np.testing.assert_array_equal(logits[:, PITCHES[0]], logits[0, PITCHES[0]])  # not below


@pytest.mark.parametrize("kind", ["nade", "independent"])
def test_both_likelihood_passes_agree(kind):
  """The per-segment pass (frames of < 16 notes) and the per-pitch pass give the same."""
  rng = np.random.default_rng(0)
  head = _heads(kind, batch=4)
  notes = (rng.random((4, encoding.NUM_NOTES)) < 0.08).astype(np.float32)
  lengths = notes * rng.integers(1, 4, notes.shape)
  dense = notes.copy()
  dense[0, :20] = 1  # one frame of 20 notes sends the batch down the per-pitch pass
  dense_lengths = np.where(dense > 0, np.maximum(lengths, 1), 0)
  few = head.scores(jnp.asarray(notes), jnp.asarray(lengths))
  many = head.scores(jnp.asarray(dense), jnp.asarray(dense_lengths))
  both = jax.tree.map(lambda x: x[1:], many)
  again = jax.tree.map(lambda x: x[1:], few)
  np.testing.assert_allclose(np.asarray(both[0]), np.asarray(again[0]), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(both[1]), np.asarray(again[1]), rtol=1e-5, atol=1e-5)


def test_add_metre_counts_the_running_time_in_bars():
  frames = np.zeros((5, encoding.FRAME_DIM), np.float32)
  frames[:, 0] = 1
  frames[:, encoding.DURATION_INDEX] = [1, 0.5, 2, 1, 1]
  with_metre = encoding.add_metre(frames, "3/4", 12)
  layout = encoding.frame_layout(with_metre)
  assert layout.metre and layout.parts == ("notes", "duration", "metre")
  np.testing.assert_array_equal(with_metre[:, layout.metre_columns],
                                [[0, 3], [1, 3], [1.5, 3], [0.5, 3], [1.5, 3]])
  np.testing.assert_array_equal(encoding.strip_metre(with_metre), frames)
  assert encoding.bar_steps("6/8", 12) == 36 and encoding.bar_steps("bad", 12) == 48
  # The codec reads past the metre columns: the same notes either way.
  for a, b in zip(encoding.frames_to_notes(with_metre), encoding.frames_to_notes(frames)):
    np.testing.assert_array_equal(a, b)


def test_a_pickup_keeps_its_place_in_the_bar():
  import io  # pylint: disable=g-import-not-at-top
  import mido  # pylint: disable=g-import-not-at-top
  # 3/4 with a one-quarter pickup: the first note on the third beat of the file's first bar.
  midi = mido.MidiFile(type=0, ticks_per_beat=480)
  track = mido.MidiTrack([mido.MetaMessage("time_signature", numerator=3, denominator=4)])
  now = 0
  for tick, kind, pitch in ((960, "note_on", 60), (1440, "note_off", 60), (1440, "note_on", 64),
                            (2400, "note_off", 64), (2400, "note_on", 67),
                            (2880, "note_off", 67)):
    track.append(mido.Message(kind, note=pitch, velocity=80 if kind == "note_on" else 0,
                              time=tick - now))
    now = tick
  midi.tracks.append(track)
  buffer = io.BytesIO()
  midi.save(file=buffer)
  frames, stats = encoding.encode_midi(buffer.getvalue(), note_lengths=True)
  assert stats.start_step == 24 and stats.time_signature == "3/4"
  with_metre = encoding.add_metre(frames, stats.time_signature, 12, stats.start_step)
  layout = encoding.frame_layout(with_metre)
  np.testing.assert_array_equal(with_metre[:, layout.metre_columns], [[2, 3], [0, 3], [2, 3]])
  # Written out, the pickup comes back as leading silence: the same frames and metre.
  written = io.BytesIO()
  encoding.frames_to_midi(with_metre, time_signature="3/4").save(file=written)
  again, again_stats = encoding.encode_midi(written.getvalue(), note_lengths=True)
  np.testing.assert_array_equal(again, frames)
  np.testing.assert_array_equal(
      encoding.add_metre(again, "3/4", 12, again_stats.start_step), with_metre)


def test_transposing_moves_the_lengths_with_their_notes():
  layout = encoding.FrameLayout(lengths=True, metre=True)
  frames = np.zeros((1, 2, layout.width), np.float32)
  frames[0, :, 30] = 1
  frames[0, :, layout.length_columns.start + 30] = 2.5
  frames[0, :, layout.metre_columns] = [1.0, 4.0]
  moved = batches.transpose(frames, np.array([3]))
  assert moved[0, 0, 33] == 1 and moved[0, 0, layout.length_columns.start + 33] == 2.5
  assert moved[0, 0, 30] == 0 and moved[0, 0, layout.length_columns.start + 30] == 0
  np.testing.assert_array_equal(moved[..., layout.metre_columns], frames[..., layout.metre_columns])


def test_json_benchmarks_have_no_lengths_or_pedal_but_keep_metre():
  cfg = DataConfig(dataset="json", data_path="x.json")
  assert not cfg.note_lengths and cfg.sustain_pedal == "ignore" and cfg.metre
  midi = DataConfig()
  assert midi.note_lengths and midi.sustain_pedal == "apply" and midi.metre
  assert not DataConfig(duration_mode="note").note_lengths  # lengths need the ioi frame


@pytest.mark.parametrize("model", ["lstm", "transformer"])
def test_the_sampler_draws_lengths_and_carries_the_bar(model):
  cfg = ModelConfig(model=model, hidden_size=16, num_layers=1, num_heads=2, nade_hidden=8,
                    note_lengths=True, metre=True, max_length_steps=24, seq_len=16)
  layout = encoding.FrameLayout(lengths=True, metre=True)
  rng = np.random.default_rng(1)
  prime = np.zeros((3, encoding.FrameLayout(lengths=True).width), np.float32)
  prime[:, 40] = 1
  prime[:, encoding.DURATION_INDEX] = [0.75, 0.5, 1 / 3]
  prime[:, layout.length_columns.start + 40] = [2, 1, 1]
  prime = encoding.add_metre(prime, "3/4", 12)
  params = registry.init_params(cfg, jax.random.key(0))
  step = lambda frame, carry, p: registry.decode_step(cfg, p, frame, carry)
  settings = sampling.SampleSettings(num_frames=40)
  out = np.asarray(sampling.generate(step, registry.init_carry(cfg, 2),
                                     jnp.asarray(np.stack([prime, prime])),
                                     jax.random.key(rng.integers(100)), settings, params))
  assert out.shape == (2, 43, layout.width)
  notes, lengths = out[..., :encoding.NUM_NOTES] > 0.5, out[..., layout.length_columns]
  np.testing.assert_array_equal(lengths > 0, notes)  # a length for every note, only for notes
  assert np.all(np.round(lengths * 12) == lengths * 12)  # on the grid
  for sample in out:  # the positions the sampler carried are those the loader computes
    np.testing.assert_allclose(encoding.add_metre(encoding.strip_metre(sample), "3/4", 12),
                               sample, atol=1e-6)
  # The scores of the sampled frames are finite, and the lengths are part of them.
  pred = registry.apply_model(cfg, params, jnp.asarray(out))
  from musicgen_jax import losses  # pylint: disable=g-import-not-at-top
  trimmed = jax.tree.map(lambda x: x[:, :-1] if x.ndim >= 2 and x.shape[:2] == out.shape[:2]
                         else x, pred)
  _, metrics = losses.loss_and_metrics(trimmed, jnp.asarray(out[:, 1:]), jnp.ones((2, 42)))
  assert np.isfinite(float(metrics["nll_total"])) and float(metrics["nll_length"]) > 0
  np.testing.assert_allclose(float(metrics["nll_total"]), float(
      metrics["nll"] + metrics["nll_length"]), rtol=1e-5)


def test_the_fast_reductions_equal_numpys():
  """first_argmax, cumsum and the sort-free sounding order the sampler uses per frame."""
  from musicgen_jax.models import distributions as d
  rng = np.random.default_rng(3)
  x = rng.normal(size=(5, 7, 96)).astype(np.float32)
  x[0, 0, [3, 9]] = 9.0  # a tie: the first wins, as with argmax
  x[1, 1] = -np.inf
  x[1, 1, 50] = 0.0
  np.testing.assert_array_equal(d.first_argmax(jnp.asarray(x)), np.argmax(x, axis=-1))
  on = rng.random((5, 7, 106)) < 0.1
  np.testing.assert_array_equal(d.first_argmax(jnp.asarray(on)), np.argmax(on, axis=-1))
  np.testing.assert_allclose(d.cumsum(jnp.asarray(x[1:]), axis=-2), np.cumsum(x[1:], axis=-2),
                             rtol=1e-5, atol=1e-5)
  notes = (rng.random((4, 106)) < 0.06).astype(np.float32)
  notes[0] = 0.0
  order, sounding = d._sounding_order(jnp.asarray(notes), 5)
  for row in range(4):
    pitches = np.flatnonzero(notes[row])[:5]
    np.testing.assert_array_equal(np.asarray(order[row])[:len(pitches)], pitches)
    np.testing.assert_array_equal(sounding[row], np.arange(5) < len(pitches))


def test_independent_lengths_drawn_for_the_sounding_notes_only_equal_all_pitches():
  """The draw that computes length distributions for at most 15 sounding notes per row gives
  the lengths of the draw over all 106 pitches (the path rows with more notes take)."""
  head = _heads("independent", batch=6).lengths
  rng = np.random.default_rng(5)
  uniforms = jnp.asarray(rng.random((6, encoding.NUM_NOTES)), jnp.float32)
  few = (rng.random((6, encoding.NUM_NOTES)) < 0.08).astype(np.float32)
  many = few.copy()
  many[0, :20] = 1.0  # one row of 20 notes: the whole batch takes the per-pitch path
  drawn_few = head.independent_draw(jnp.asarray(few), uniforms, 1.0)
  drawn_many = head.independent_draw(jnp.asarray(many), uniforms, 1.0)
  assert np.all((np.asarray(drawn_few) > 0) == (few > 0)) and few.sum() > 10
  np.testing.assert_array_equal(np.asarray(drawn_few)[1:], np.asarray(drawn_many)[1:])
