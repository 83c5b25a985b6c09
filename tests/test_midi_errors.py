"""Bad MIDI input fails with MidiError naming the file and the reason; nothing else."""

import io
import random
import time
import tracemalloc

import mido
import numpy as np
import pytest

from midi_builders import build_midi, notes
from musicgen_jax import MidiError, encode_midi, midi_to_frames

GOOD = build_midi([notes((0, 480, 60), (0, 480, 64), (480, 960, 67), (1440, 1920, 72)),
                   notes((0, 1920, 36), channel=1)])


def test_good_file_reads():
  assert midi_to_frames(GOOD).shape == (3, 107)  # the held bass covers the gap


def _track_start():
  return GOOD.index(b"MTrk")


@pytest.mark.parametrize("name, data, reason", [
    ("empty", b"", "empty file"),
    ("not midi", b"RIFF\x00\x00\x00\x00WAVEfmt ", "not a MIDI file"),
    ("text", b"hello, this is text, not music", "not a MIDI file"),
    ("truncated header", GOOD[:10], "truncated header"),
    ("truncated bytes", GOOD[:len(GOOD) - 5], "past the end"),
    ("truncated in track", GOOD[:_track_start() + 12], "past the end"),
    ("chunk length past end",
     GOOD[:_track_start() + 4] + b"\x7f\xff\xff\xff" + GOOD[_track_start() + 8:], "past the end"),
    ("ticks per beat 0", GOOD[:12] + b"\x00\x00" + GOOD[14:], "ticks per beat is 0"),
    ("SMPTE timing", GOOD[:12] + b"\xe7\x28" + GOOD[14:], "SMPTE"),
    ("bad header length", GOOD[:4] + b"\x00\x00\x00\x02" + GOOD[8:], "header chunk length"),
    ("running status without status",
     GOOD[:_track_start() + 8] + b"\x00\x40\x40" + GOOD[_track_start() + 11:], "malformed"),
])
def test_bad_bytes_raise_midierror(name, data, reason, tmp_path):
  path = tmp_path / "bad file.mid"
  path.write_bytes(data)
  with pytest.raises(MidiError, match=reason) as info:
    midi_to_frames(path)
  assert str(path) in str(info.value)  # names the file
  assert isinstance(info.value, ValueError)
  with pytest.raises(MidiError, match=reason):
    midi_to_frames(data)


def test_missing_file_is_midierror(tmp_path):
  with pytest.raises(MidiError, match="cannot read file") as info:
    midi_to_frames(tmp_path / "nope.mid")
  assert "nope.mid" in str(info.value)


def test_directory_is_midierror(tmp_path):
  with pytest.raises(MidiError, match="cannot read"):
    midi_to_frames(tmp_path)


def test_absurd_delta_times():
  track = mido.MidiTrack([mido.Message("note_on", note=60, velocity=80, time=0x0FFFFFFF),
                          mido.Message("note_off", note=60, time=10)])
  midi = mido.MidiFile()
  midi.tracks.append(track)
  buffer = io.BytesIO()
  midi.save(file=buffer)
  with pytest.raises(MidiError, match="absurd delta times"):
    midi_to_frames(buffer.getvalue())
  # Many maximal deltas in a row: bounded time, same error.
  track = mido.MidiTrack([mido.Message("note_on", note=60, velocity=0, time=0x0FFFFFFF)] * 2000)
  midi = mido.MidiFile()
  midi.tracks.append(track)
  buffer = io.BytesIO()
  midi.save(file=buffer)
  start = time.perf_counter()
  with pytest.raises(MidiError, match="absurd delta times"):
    midi_to_frames(buffer.getvalue())
  assert time.perf_counter() - start < 5


def test_no_notes_gives_empty_array():
  track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=500000),
                          mido.Message("program_change", program=3)])
  midi = mido.MidiFile()
  midi.tracks.append(track)
  frames, stats = encode_midi(midi)
  assert frames.shape == (0, 107) and frames.dtype == np.float32
  assert stats.num_notes == 0


def test_wrong_source_type_is_typeerror():
  with pytest.raises(TypeError, match="path, bytes or mido.MidiFile"):
    midi_to_frames(12345)


def _mutate(data: bytes, rng: random.Random) -> bytes:
  data = bytearray(data)
  kind = rng.randrange(5)
  if kind == 0:  # bit flips
    for _ in range(rng.randint(1, 8)):
      i = rng.randrange(len(data))
      data[i] ^= 1 << rng.randrange(8)
  elif kind == 1:  # truncation
    del data[rng.randrange(len(data)):]
  elif kind == 2:  # a chunk length changed
    starts = [i for i in range(len(data) - 4) if data[i:i + 4] in (b"MThd", b"MTrk")]
    i = rng.choice(starts) + 4
    data[i:i + 4] = rng.randrange(2**32).to_bytes(4, "big")
  elif kind == 3:  # random bytes appended
    data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
  else:  # random bytes overwritten inside a track
    start = _track_start() + 8
    for _ in range(rng.randint(1, 6)):
      data[rng.randrange(start, len(data))] = rng.randrange(256)
  return bytes(data)


def test_fuzzed_files_only_raise_midierror():
  rng = random.Random(0)
  tracemalloc.start()
  try:
    outcomes = {"ok": 0, "MidiError": 0}
    for _ in range(400):
      data = _mutate(GOOD, rng)
      start = time.perf_counter()
      try:
        frames = midi_to_frames(data)
        assert frames.ndim == 2 and frames.shape[1] == 107
        outcomes["ok"] += 1
      except MidiError:
        outcomes["MidiError"] += 1
      assert time.perf_counter() - start < 2.0
    _, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  assert peak < 64 * 2**20
  assert outcomes["ok"] > 0 and outcomes["MidiError"] > 0
