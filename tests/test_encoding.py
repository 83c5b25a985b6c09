"""The 107-dim frame codec: known answers on hand-built MIDI, and round trips."""

import io

import mido
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from midi_builders import build_midi, notes
from musicgen_jax import encoding
from musicgen_jax.encoding import (DURATION_INDEX, FRAME_DIM, LOWEST_PITCH, NUM_NOTES,
                                   encode_midi, frames_to_midi, midi_to_frames)

Q = 480  # ticks per quarter in most tests


def pitches_of(frame):
  return [int(i) + LOWEST_PITCH for i in np.nonzero(frame[:NUM_NOTES])[0]]


def summary(frames):
  """[(pitches, duration)] per frame: easy to compare with a hand-made answer."""
  return [(pitches_of(f), float(f[DURATION_INDEX])) for f in frames]


F32_THIRD = float(np.float32(1 / 3))


def test_constants():
  assert (NUM_NOTES, LOWEST_PITCH, FRAME_DIM, DURATION_INDEX) == (106, 21, 107, 106)


def test_chord_is_one_frame():
  data = build_midi([notes((0, Q, 60), (0, Q, 64), (0, Q, 67), (Q, 2 * Q, 72))])
  frames = midi_to_frames(data)
  assert frames.dtype == np.float32 and frames.shape == (2, FRAME_DIM)
  assert summary(frames) == [([60, 64, 67], 1.0), ([72], 1.0)]


def test_held_bass_under_moving_melody():
  # A whole-note bass under four quarter notes: the bass frame lasts one quarter
  # (ioi); in note mode it lasts as long as the bass.
  data = build_midi([notes((0, 4 * Q, 36), (0, Q, 72), (Q, 2 * Q, 74), (2 * Q, 3 * Q, 76),
                           (3 * Q, 4 * Q, 77))])
  assert summary(midi_to_frames(data)) == [
      ([36, 72], 1.0), ([74], 1.0), ([76], 1.0), ([77], 1.0)]
  assert summary(midi_to_frames(data, duration_mode="note")) == [
      ([36, 72], 4.0), ([74], 1.0), ([76], 1.0), ([77], 1.0)]


def test_rest_becomes_empty_frame():
  # Quarter, a half-note rest, quarter.
  data = build_midi([notes((0, Q, 60), (3 * Q, 4 * Q, 62))])
  assert summary(midi_to_frames(data)) == [([60], 1.0), ([], 2.0), ([62], 1.0)]
  # A note still sounding over the next onset means no rest.
  data = build_midi([notes((0, 3 * Q, 48), (0, Q, 60), (2 * Q, 3 * Q, 62))])
  assert summary(midi_to_frames(data)) == [([48, 60], 2.0), ([62], 1.0)]


def test_rest_after_longer_earlier_note():
  # The frame before a rest lasts until the last *sounding* note ends.
  data = build_midi([notes((0, 2 * Q, 48), (Q // 2, Q, 60), (4 * Q, 5 * Q, 62))])
  assert summary(midi_to_frames(data)) == [
      ([48], 0.5), ([60], 1.5), ([], 2.0), ([62], 1.0)]


def test_leading_silence_dropped():
  data = build_midi([notes((7 * Q, 8 * Q, 60))])
  assert summary(midi_to_frames(data)) == [([60], 1.0)]


def test_triplets_on_the_grid():
  third = Q // 3
  data = build_midi([notes((0, third, 60), (third, 2 * third, 62), (2 * third, Q, 64),
                           (Q, 2 * Q, 65))])
  frames = midi_to_frames(data)
  assert summary(frames) == [([60], F32_THIRD), ([62], F32_THIRD), ([64], F32_THIRD), ([65], 1.0)]
  np.testing.assert_array_equal(frames[:3, DURATION_INDEX] * 12, [4, 4, 4])
  # 16ths at 12 steps per quarter are 3 steps.
  data = build_midi([notes(*[(i * Q // 4, (i + 1) * Q // 4, 60 + i) for i in range(4)])])
  np.testing.assert_array_equal(midi_to_frames(data)[:, DURATION_INDEX], [0.25] * 4)


def test_off_grid_onsets_are_quantised():
  # 5 ticks off the grid rounds to it; two onsets within half a step merge into a chord.
  data = build_midi([notes((0, Q, 60), (5, Q, 64), (Q + 3, 2 * Q, 67))])
  assert summary(midi_to_frames(data)) == [([60, 64], 1.0), ([67], 1.0)]


def test_tempo_change_keeps_quarter_note_durations():
  data = build_midi([notes((0, Q, 60), (Q, 2 * Q, 62), (2 * Q, 4 * Q, 64))],
                    tempos=[(0, 60), (Q, 200)])
  assert summary(midi_to_frames(data)) == [([60], 1.0), ([62], 1.0), ([64], 2.0)]


def test_type0_and_type1_agree():
  melody = notes((0, Q, 72), (Q, 2 * Q, 74))
  bass = notes((0, 2 * Q, 48), channel=1)
  type1 = build_midi([melody, bass])
  type0 = build_midi([sorted(melody + bass, key=lambda e: e[0])], midi_type=0)
  assert mido.MidiFile(file=io.BytesIO(type1)).type == 1
  assert mido.MidiFile(file=io.BytesIO(type0)).type == 0
  np.testing.assert_array_equal(midi_to_frames(type0), midi_to_frames(type1))
  assert summary(midi_to_frames(type1)) == [([48, 72], 1.0), ([74], 1.0)]


def test_note_on_velocity_zero_is_note_off():
  events = [(0, "on", 0, 60, 90), (Q, "on", 0, 60, 0), (2 * Q, "on", 0, 62, 90),
            (3 * Q, "on", 0, 62, 0)]
  assert summary(midi_to_frames(build_midi([events]))) == [([60], 1.0), ([], 1.0), ([62], 1.0)]


def test_restruck_pitch_closes_oldest_note():
  # 60 struck at 0 and again at 1 while sounding; the first off closes the first.
  events = [(0, "on", 0, 60, 80), (Q, "on", 0, 60, 80), (2 * Q, "off", 0, 60, 0),
            (4 * Q, "off", 0, 60, 0)]
  frames = midi_to_frames(build_midi([events]))
  assert summary(frames) == [([60], 1.0), ([60], 3.0)]
  frames = midi_to_frames(build_midi([events]), duration_mode="note")
  assert summary(frames) == [([60], 2.0), ([60], 3.0)]


def test_same_channel_only_closes_same_channel():
  events = [(0, "on", 0, 60, 80), (0, "on", 1, 60, 80), (Q, "off", 1, 60, 0),
            (2 * Q, "off", 0, 60, 0)]
  assert summary(midi_to_frames(build_midi([events]), duration_mode="note")) == [([60], 2.0)]


def test_unclosed_note_ends_at_end_of_file():
  events = [(0, "on", 0, 60, 80), (Q, "on", 0, 64, 80), (2 * Q, "off", 0, 64, 0),
            (4 * Q, "off", 0, 70, 0)]  # the last event (a stray off) is at 4 quarters
  for reader in ("mido", "auto"):  # every reader gives the specification's notes
    frames, stats = encode_midi(build_midi([events]), reader=reader)
    assert summary(frames) == [([60], 1.0), ([64], 3.0)]
    assert stats.unclosed_notes == 1


def test_every_note_lasts_at_least_one_step():
  data = build_midi([notes((0, 0, 60), (0, 3, 64))])
  assert summary(midi_to_frames(data)) == [([60, 64], float(np.float32(1 / 12)))]


def test_drums_skipped_and_counted():
  data = build_midi([notes((0, Q, 60)), notes((0, Q, 36), (Q, 2 * Q, 38), channel=9)])
  frames, stats = encode_midi(data)
  assert summary(frames) == [([60], 1.0)]
  assert stats.dropped_drums == 2
  frames, stats = encode_midi(data, include_drums=True)
  assert summary(frames) == [([36, 60], 1.0), ([38], 1.0)]
  assert stats.dropped_drums == 0


def test_out_of_range_pitches_dropped_and_counted():
  data = build_midi([notes((0, Q, 20), (0, Q, 21), (Q, 2 * Q, 126), (Q, 2 * Q, 127),
                           (2 * Q, 3 * Q, 0))])
  frames, stats = encode_midi(data)
  assert summary(frames) == [([21], 1.0), ([126], 1.0)]
  assert stats.dropped_out_of_range == 3
  assert stats.num_notes == 2 and stats.num_frames == 2


@pytest.mark.parametrize("tpb", [24, 96, 120, 384, 480, 960, 1000])
def test_ticks_per_beat_values(tpb):
  data = build_midi([notes((0, tpb, 60), (tpb, tpb + tpb // 2, 62), (2 * tpb, 3 * tpb, 64))],
                    ticks_per_beat=tpb)
  assert summary(midi_to_frames(data)) == [([60], 1.0), ([62], 0.5), ([], 0.5), ([64], 1.0)]


def test_sources_path_bytes_and_midifile(tmp_path):
  data = build_midi([notes((0, Q, 60))])
  path = tmp_path / "a.mid"
  path.write_bytes(data)
  expected = midi_to_frames(data)
  np.testing.assert_array_equal(midi_to_frames(str(path)), expected)
  np.testing.assert_array_equal(midi_to_frames(path), expected)
  np.testing.assert_array_equal(midi_to_frames(mido.MidiFile(path)), expected)


def test_steps_per_quarter_setting():
  data = build_midi([notes((0, Q // 8, 60), (Q // 8, Q, 62))])
  # At 4 steps per quarter a 32nd note rounds up to one 16th.
  assert summary(midi_to_frames(data, steps_per_quarter=4)) == [([60], 0.25), ([62], 0.75)]
  with pytest.raises(ValueError, match="steps_per_quarter"):
    midi_to_frames(data, steps_per_quarter=0)
  with pytest.raises(ValueError, match="duration_mode"):
    midi_to_frames(data, duration_mode="bar")


def test_note_mode_decodes_back_to_back():
  frames = np.zeros((2, FRAME_DIM), np.float32)
  frames[0, [0, 10]] = 1.0
  frames[0, DURATION_INDEX] = 2.0
  frames[1, 5] = 1.0
  frames[1, DURATION_INDEX] = 0.5
  midi = frames_to_midi(frames, duration_mode="note")
  np.testing.assert_array_equal(midi_to_frames(midi, duration_mode="note"), frames)


def test_frames_to_midi_writes_tempo_and_velocity():
  frames = np.zeros((1, FRAME_DIM), np.float32)
  frames[0, 39] = 1.0
  frames[0, DURATION_INDEX] = 1.0
  midi = frames_to_midi(frames, tempo_bpm=90.0, velocity=100, ticks_per_beat=96)
  msgs = list(midi.tracks[0])
  tempo = [m for m in msgs if m.type == "set_tempo"][0].tempo
  assert tempo == mido.bpm2tempo(90.0)
  ons = [m for m in msgs if m.type == "note_on"]
  assert [(m.note, m.velocity) for m in ons] == [(60, 100)]
  assert midi.ticks_per_beat == 96 and midi.length == pytest.approx(60 / 90)


def test_frames_to_midi_rejects_bad_frames():
  with pytest.raises(ValueError, match="shape"):
    frames_to_midi(np.zeros((3, 88)))
  bad = np.zeros((1, FRAME_DIM))
  bad[0, DURATION_INDEX] = np.nan
  with pytest.raises(ValueError, match="non-finite"):
    frames_to_midi(bad)


# Property tests ---------------------------------------------------------------------

@st.composite
def grid_frames(draw):
  """Frames with grid durations, notes in every frame but rest frames, no two
  adjacent empty frames, and no leading or trailing empty frame."""
  num = draw(st.integers(1, 24))
  frames = np.zeros((num, FRAME_DIM), np.float32)
  prev_empty = True  # forbids a leading empty frame
  for k in range(num):
    empty = (not prev_empty and k < num - 1 and draw(st.booleans()) and draw(st.booleans()))
    if not empty:
      chord = draw(st.lists(st.integers(0, NUM_NOTES - 1), min_size=1, max_size=6, unique=True))
      frames[k, chord] = 1.0
    frames[k, DURATION_INDEX] = draw(st.integers(1, 96)) / 12
    prev_empty = empty
  return frames


@settings(max_examples=60, deadline=None)
@given(grid_frames())
def test_frames_midi_frames_round_trip(frames):
  for tpb in (480, 96):
    back = midi_to_frames(frames_to_midi(frames, ticks_per_beat=tpb))
    np.testing.assert_array_equal(back, frames)


@st.composite
def random_midi(draw):
  tpb = draw(st.sampled_from([96, 100, 384, 480, 960]))
  tracks = []
  for _ in range(draw(st.integers(1, 3))):
    events = []
    for _ in range(draw(st.integers(0, 25))):
      start = draw(st.integers(0, 16 * tpb))
      length = draw(st.integers(0, 4 * tpb))
      pitch = draw(st.integers(0, 127))
      channel = draw(st.sampled_from([0, 1, 9]))
      events.append((start, "on", channel, pitch, draw(st.integers(1, 127))))
      events.append((start + length, "off", channel, pitch, 0))
    tracks.append(events)
  return tpb, tracks


@settings(max_examples=60, deadline=None)
@given(random_midi(), st.sampled_from(["ioi", "note"]))
def test_encoding_preserves_onsets_and_pitches(spec, mode):
  tpb, tracks = spec
  data = build_midi(tracks, ticks_per_beat=tpb)
  frames, stats = encode_midi(data, duration_mode=mode)
  spq = 12
  expected = set()
  in_range_total, drums = 0, 0
  for events in tracks:
    for tick, kind, channel, pitch, _ in events:
      if kind != "on":
        continue
      if channel == 9:
        drums += 1
      elif LOWEST_PITCH <= pitch <= 126:
        in_range_total += 1
        expected.add(((2 * tick * spq + tpb) // (2 * tpb), pitch))
      else:
        in_range_total += 0
  assert stats.dropped_drums == drums
  # Decode onsets from the frames: time starts at the first onset.
  steps = np.rint(frames[:, DURATION_INDEX] * spq).astype(int)
  starts = np.concatenate([[0], np.cumsum(steps)[:-1]])
  got = {(int(starts[k]), p) for k in range(len(frames)) for p in pitches_of(frames[k])}
  if mode == "ioi":
    offset = min(t for t, _ in expected) if expected else 0
    assert got == {(t - offset, p) for t, p in expected}
  else:
    # Note mode loses timing; it keeps every (onset order, pitch).
    assert {p for _, p in got} == {p for _, p in expected}
  assert stats.num_notes == len(expected)
  assert stats.num_notes + stats.merged_duplicates == in_range_total


def test_real_corpus_round_trip():
  """Every piano-midi.de file survives frames -> MIDI -> frames (skips without ../shared)."""
  import pathlib
  folder = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "piano-midi"
  files = sorted(folder.glob("*.mid"))[:12]
  if not files:
    pytest.skip("../shared/data/piano-midi not present")
  for path in files:
    frames = midi_to_frames(path)
    assert len(frames) > 100, path
    np.testing.assert_array_equal(midi_to_frames(frames_to_midi(frames)), frames)


def test_empty_frames_array_for_file_without_notes():
  data = build_midi([[]])
  frames, stats = encode_midi(data)
  assert frames.shape == (0, FRAME_DIM) and stats.num_frames == 0
  assert encoding.frames_to_notes(frames)[0].size == 0


def test_one_description_of_the_frame_checks_every_entry_point(tmp_path):
  """Frames of a wrong width get the same message everywhere: the frame's parts are
  described once (encoding.FrameLayout)."""
  from musicgen_jax import evaluate, losses, music_stats, plotting  # pylint: disable=g-import-not-at-top
  from musicgen_jax.data import WindowBatches, sources  # pylint: disable=g-import-not-at-top
  assert [l.describe() for l in encoding.LAYOUTS] == [
      "107 (notes, duration)", "108 (notes, duration, velocity)",
      "213 (notes, duration, lengths)", "214 (notes, duration, velocity, lengths)",
      "109 (notes, duration, metre)", "110 (notes, duration, velocity, metre)",
      "215 (notes, duration, lengths, metre)", "216 (notes, duration, velocity, lengths, metre)"]
  assert encoding.FrameLayout(velocity=True).velocity_index == FRAME_DIM
  bad = np.zeros((4, 50), np.float32)
  calls = [
      lambda: encoding.frames_to_midi(bad),
      lambda: sources.SparsePiece.from_frames(bad, {}),
      lambda: WindowBatches([bad], 2, 2, 0),
      lambda: music_stats.piece_features(bad),
      lambda: evaluate.evaluate_pieces(None, None, [bad]),
      lambda: losses.frame_terms(None, bad),
  ]
  if plotting.available():
    calls.append(lambda: plotting.piano_roll(bad, str(tmp_path / "x.png")))
  for call in calls:
    with pytest.raises(ValueError, match=r"must be \[.*F\] with F = 107 \(notes, duration\), "
                                         r"\+ 1 with velocity, \+ 106 with note lengths, \+ 2 "
                                         r"with metre \(one of 107, 108, 109, 110, 213, 214, "
                                         r"215, 216\); got shape"):
      call()
