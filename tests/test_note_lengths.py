"""Frames with note lengths: every note keeps its own quantised length, exact both ways."""

import pathlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from midi_builders import build_midi, notes
from musicgen_jax import encoding, midi, music_stats
from musicgen_jax.encoding import (FrameLayout, encode_midi, frames_to_midi, frames_to_notes,
                                   midi_to_frames, notes_to_frames)

Q = 480
SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "piano-midi"


def _decoded(data, **kw):
  frames = midi_to_frames(data, note_lengths=True, **kw)
  onsets, ends, pitches = frames_to_notes(frames)
  return frames, sorted(zip(onsets.tolist(), pitches.tolist(), ends.tolist()))


def test_the_layout_adds_106_length_columns():
  layout = FrameLayout(velocity=True, lengths=True)
  assert layout.width == 214 and layout.length_columns == slice(108, 214)
  assert FrameLayout(lengths=True).describe() == "213 (notes, duration, lengths)"
  assert encoding.frame_layout(np.zeros((3, 213))) == FrameLayout(lengths=True)


def test_a_note_held_across_many_onsets_is_held():
  # A bass note of 4 quarters under eight eighth notes.
  melody = [(i * Q // 2, (i + 1) * Q // 2, 72 + i % 3) for i in range(8)]
  data = build_midi([notes((0, 4 * Q, 48), *melody)])
  frames, decoded = _decoded(data)
  assert (0, 48, 48) in decoded  # onset 0, pitch 48, ends at 48 steps (4 quarters)
  assert frames.shape == (8, 213)
  assert frames[0, 106 + 1 + 48 - 21] == 4.0  # its length column
  ioi_onsets, ioi_ends, ioi_pitches = frames_to_notes(midi_to_frames(data))
  assert ioi_ends[(ioi_pitches == 48)][0] == 6  # the ioi frame cuts it at the next onset


def test_a_note_ending_between_onsets_ends_there():
  data = build_midi([notes((0, Q // 4, 60), (0, 2 * Q, 64), (Q, 2 * Q, 67))])
  _, decoded = _decoded(data)
  assert decoded == [(0, 60, 3), (0, 64, 24), (12, 67, 24)]


def test_a_pitch_struck_again_while_it_sounds_ends_the_earlier_note():
  # 60 held 0..4 quarters, struck again at 1 and held to 2: the off at 2 closes the oldest
  # (the first) note, so the notes are (0, 2) and (1, 4); the first is cut at the re-strike.
  events = [(0, "on", 0, 60, 80), (Q, "on", 0, 60, 90), (2 * Q, "off", 0, 60, 0),
            (4 * Q, "off", 0, 60, 0)]
  frames, decoded = _decoded(build_midi([events]))
  assert decoded == [(0, 60, 12), (12, 60, 48)]
  np.testing.assert_array_equal(midi_to_frames(frames_to_midi(frames), note_lengths=True),
                                frames)


def test_chords_keep_each_notes_length_and_velocity():
  data = build_midi([notes((0, Q, 60), (0, 3 * Q, 64), velocity=90)])
  frames = midi_to_frames(data, note_lengths=True, with_velocity=True)
  layout = encoding.frame_layout(frames)
  assert layout == FrameLayout(velocity=True, lengths=True)
  assert frames[0, layout.velocity_index] == 90
  assert frames[0, layout.length_columns][[60 - 21, 64 - 21]].tolist() == [1.0, 3.0]
  np.testing.assert_array_equal(
      midi_to_frames(frames_to_midi(frames), note_lengths=True, with_velocity=True), frames)


def test_note_lengths_need_the_ioi_mode():
  with pytest.raises(ValueError, match="duration_mode='ioi'"):
    notes_to_frames([0], [12], [60], duration_mode="note", note_lengths=True)


@st.composite
def grid_notes(draw):
  n = draw(st.integers(1, 30))
  onsets = draw(st.lists(st.integers(0, 200), min_size=n, max_size=n))
  lengths = draw(st.lists(st.integers(1, 60), min_size=n, max_size=n))
  pitches = draw(st.lists(st.integers(21, 126), min_size=n, max_size=n))
  onsets = np.asarray(onsets) - min(onsets)
  return onsets, onsets + np.asarray(lengths), np.asarray(pitches)


@settings(max_examples=80, deadline=None)
@given(grid_notes(), st.booleans())
def test_frames_midi_frames_is_the_identity_and_notes_keep_their_ends(spec, velocity):
  onsets, ends, pitches = spec
  velocities = np.full(onsets.shape, 70) if velocity else None
  frames = notes_to_frames(onsets, ends, pitches, velocities=velocities, note_lengths=True)
  back = midi_to_frames(frames_to_midi(frames), note_lengths=True, with_velocity=velocity)
  np.testing.assert_array_equal(back, frames)
  # Every note keeps (onset, pitch, end), its end cut only where its pitch is struck again.
  expected = set(zip(onsets.tolist(), pitches.tolist(),
                     encoding.cut_at_restrike(onsets, ends, pitches).tolist()))
  merged = {}
  for onset, pitch, end in expected:  # a pitch struck twice at one onset is one note
    merged[(onset, pitch)] = max(end, merged.get((onset, pitch), 0))
  got_onsets, got_ends, got_pitches = frames_to_notes(frames)
  assert sorted(zip(got_onsets.tolist(), got_pitches.tolist(), got_ends.tolist())) == sorted(
      (onset, pitch, end) for (onset, pitch), end in merged.items())


_sounding_steps = music_stats.sounding_steps


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/piano-midi is absent")
def test_real_piano_music_keeps_all_of_its_note_time_and_round_trips():
  files = sorted(SHARED.glob("*.mid"))[::4]
  assert len(files) >= 20
  for path in files:
    table, _ = midi.read_notes(str(path))
    keep = (table.pitches >= 21) & (table.pitches <= 126)
    quantise = lambda ticks: encoding._quantise(ticks[keep], table.ticks_per_beat, 12)  # pylint: disable=protected-access
    onsets, ends, pitches = quantise(table.onsets), quantise(table.ends), table.pitches[keep]
    ends, onsets = np.maximum(ends, onsets + 1) - onsets.min(), onsets - onsets.min()
    frames, stats = encode_midi(str(path), note_lengths=True, with_velocity=True)
    assert _sounding_steps(*frames_to_notes(frames)) == _sounding_steps(onsets, ends, pitches)
    np.testing.assert_array_equal(
        midi_to_frames(frames_to_midi(frames), note_lengths=True, with_velocity=True), frames,
        err_msg=path.name)
    assert stats.num_notes == int(frames[:, :106].sum())


def test_a_sparse_piece_keeps_the_note_lengths():
  from musicgen_jax import encoding  # pylint: disable=g-import-not-at-top
  from musicgen_jax.data import sources, sparse  # pylint: disable=g-import-not-at-top
  frames = notes_to_frames([0, 12, 12], [48, 18, 30], [48, 60, 64], note_lengths=True,
                           velocities=[70, 80, 90])
  piece = sources.SparsePiece.from_frames(frames, {})
  assert piece.lengths.tolist() == [4.0, 0.5, 1.5]
  store = sparse.SparseFrames.from_sparse([piece], encoding.frame_layout(frames))
  np.testing.assert_array_equal(store.piece(0), frames)


# The sustain pedal.


def _pedalled(tracks, **kw):
  data = build_midi(tracks)
  return _decoded(data, sustain_pedal="apply", **kw)[1], encode_midi(
      data, note_lengths=True, sustain_pedal="apply")[1]


def test_a_note_held_by_the_pedal_sounds_until_the_pedal_lifts():
  events = [(0, "pedal", 0, 0, 127), *notes((0, Q, 60), (2 * Q, 5 * Q, 64)),
            (3 * Q, "pedal", 0, 0, 0)]
  decoded, stats = _pedalled([events])
  assert decoded == [(0, 60, 36), (24, 64, 60)]  # 60 held to 3 quarters; 64 is past the lift
  assert stats.pedal_extended_notes == 1
  ignored = _decoded(build_midi([events]))[1]
  assert ignored == [(0, 60, 12), (24, 64, 60)]


def test_a_pitch_struck_again_under_the_pedal_ends_the_held_note():
  events = [(0, "pedal", 0, 0, 100), *notes((0, Q, 60), (2 * Q, 2 * Q + Q // 2, 60)),
            (4 * Q, "pedal", 0, 0, 0)]
  decoded, stats = _pedalled([events])
  assert decoded == [(0, 60, 24), (24, 60, 48)]
  assert stats.pedal_extended_notes == 2


def test_pedal_edge_cases():
  # Never lifted: held to the file's last event (a stray note-off at 6 quarters).
  never = [(0, "pedal", 0, 0, 127), *notes((0, Q, 60)), (6 * Q, "off", 0, 70, 0)]
  assert _pedalled([never])[0] == [(0, 60, 72)]
  # Pressed after the release, lifted at the release's tick, or on another channel: no hold.
  for pedal in ([(2 * Q, "pedal", 0, 0, 127), (3 * Q, "pedal", 0, 0, 0)],
                [(0, "pedal", 0, 0, 127), (Q, "pedal", 0, 0, 0), (3 * Q, "pedal", 0, 0, 127)],
                [(0, "pedal", 1, 0, 127), (3 * Q, "pedal", 1, 0, 0)]):
    decoded, stats = _pedalled([[*notes((0, Q, 60)), *pedal, (4 * Q, "off", 0, 70, 0)]])
    assert decoded == [(0, 60, 12)] and stats.pedal_extended_notes == 0, pedal
  # The pedal in a track of its own holds the notes of every track on its channel.
  decoded, _ = _pedalled([[(0, "pedal", 0, 0, 127), (2 * Q, "pedal", 0, 0, 0)],
                          notes((0, Q // 2, 60)), notes((0, Q // 2, 67))])
  assert decoded == [(0, 60, 24), (0, 67, 24)]


def test_pedalled_frames_round_trip_and_both_readers_agree():
  events = [(0, "pedal", 0, 0, 127), *notes((0, Q, 48), (Q, 2 * Q, 52), (2 * Q, 3 * Q, 55)),
            (3 * Q + 7, "pedal", 0, 0, 0), *notes((4 * Q, 5 * Q, 60))]
  data = build_midi([events])
  frames = midi_to_frames(data, note_lengths=True, sustain_pedal="apply")
  again = midi_to_frames(frames_to_midi(frames), note_lengths=True, sustain_pedal="apply")
  np.testing.assert_array_equal(again, frames)
  np.testing.assert_array_equal(
      frames, midi_to_frames(data, note_lengths=True, sustain_pedal="apply", reader="mido"))
  with pytest.raises(ValueError, match="sustain_pedal must be one of"):
    encode_midi(data, sustain_pedal="half")


def test_random_pedalled_files_read_alike_on_both_paths():
  import random  # pylint: disable=g-import-not-at-top
  rng = random.Random(5)
  for _ in range(150):
    channels = rng.choice([[0, 0, 1, 9], [0, 0, 9], [0]])
    tracks = []
    for _ in range(rng.choice([1, 2, 3])):
      events = [(0, "on", 0, 60, 80), (12, "off", 0, 60, 0)]
      for _ in range(rng.randint(0, 20)):
        tick, channel = rng.randint(0, 40) * 12, rng.choice(channels)
        pitch = rng.choice([60, 62, 64, 65, 67])
        events += [(tick, "on", channel, pitch, rng.randint(1, 127)),
                   (tick + rng.choice([1, 6, 12, 48, 96]), "off", channel, pitch, 0)]
      events += [(rng.randint(0, 40) * 12, "pedal", rng.choice(channels), 0,
                  rng.choice([0, 63, 64, 127])) for _ in range(rng.randint(0, 6))]
      tracks.append(events)
    data = build_midi(tracks, ticks_per_beat=rng.choice([96, 480]))
    for drums in (False, True):
      kw = dict(include_drums=drums, with_velocity=True, note_lengths=True,
                sustain_pedal="apply")
      (fast, fast_stats), (slow, slow_stats) = (encode_midi(data, reader="symusic", **kw),
                                                encode_midi(data, reader="mido", **kw))
      np.testing.assert_array_equal(fast, slow)
      assert fast_stats == slow_stats


def test_a_midi_folder_loads_with_note_lengths_and_the_pedal(tmp_path):
  from musicgen_jax.config import RunConfig  # pylint: disable=g-import-not-at-top
  from musicgen_jax.data import DataConfig, load_dataset  # pylint: disable=g-import-not-at-top
  from toy import toy_config  # pylint: disable=g-import-not-at-top
  folder = tmp_path / "midi"
  folder.mkdir()
  for i in range(6):
    events = [(0, "pedal", 0, 0, 127), *notes((0, Q, 48 + i), (Q, 2 * Q, 60), (Q, 5 * Q, 64)),
              (3 * Q, "pedal", 0, 0, 0), *notes((4 * Q, 5 * Q, 67))]
    (folder / f"p{i}.mid").write_bytes(build_midi([events]))
  cfg = DataConfig(dataset="midi_dir", data_dir=str(folder), cache_dir=str(tmp_path / "c"),
                   num_workers=1, note_lengths=True, sustain_pedal="apply", metre=False,
                   valid_fraction=0.2, test_fraction=0.2)
  first, again = load_dataset(cfg), load_dataset(cfg)
  assert again.summary["cache_hit"] and first.summary["pedal_extended_notes"] == 6 * 2
  pieces = {p.name: p for split in ("train", "valid", "test") for p in first[split]}
  cached = {p.name: p for split in ("train", "valid", "test") for p in again[split]}
  for name, piece in pieces.items():
    direct = midi_to_frames(str(folder / name), note_lengths=True, sustain_pedal="apply")
    assert piece.frames.shape[1] == 213
    np.testing.assert_array_equal(piece.frames, direct)
    np.testing.assert_array_equal(cached[name].frames, direct)
  config = RunConfig.create(toy_config().model, cfg, toy_config().train)
  assert config.model.note_lengths and not config.model.metre  # the model reads the data's
  # The json benchmarks' time steps list sounding pitches: no lengths there.
  assert not DataConfig(dataset="json", data_path="x.json", note_lengths=True).note_lengths
