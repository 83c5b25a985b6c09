"""MIDI bytes in and out, through mido; the only module that touches MIDI bytes.

Reading turns a Standard MIDI File into a flat table of notes in ticks
(`NoteTable`); writing turns notes in ticks back into a `mido.MidiFile`. Every
way a file can be bad (empty, not MIDI, truncated, a chunk running past the
end, SMPTE timing, absurd delta times, ...) surfaces as `MidiError`, a
`ValueError` whose message names the file and the reason.
"""

from __future__ import annotations

import collections
import dataclasses
import importlib.util
import io
import os
from typing import Union

import mido
import numpy as np

DRUM_CHANNEL = 9  # General MIDI channel 10, counted from 0
# A file longer than this many quarter notes (about 14 hours at 120 bpm) has
# absurd delta times; rejecting it keeps memory and time bounded.
MAX_FILE_QUARTERS = 100_000
MAX_FILE_BYTES = 64 * 1024 * 1024

MidiSource = Union[str, os.PathLike, bytes, bytearray, mido.MidiFile]


class MidiError(ValueError):
  """Unreadable or invalid MIDI; the message names the file and why."""


SUSTAIN_CONTROLLER = 64  # the sustain (damper) pedal; pressed at a value of 64 or more
DEFAULT_TEMPO_BPM = 120.0  # a Standard MIDI File without a tempo event plays at 120 bpm
DEFAULT_TIME_SIGNATURE = "4/4"


@dataclasses.dataclass(frozen=True)
class NoteTable:
  """Notes of one file in ticks, sorted by onset.

  onsets, ends: int64[N] absolute ticks (end > onset is not guaranteed: a
    note-off at its own onset tick gives end == onset).
  pitches, velocities, channels: int32[N] (from symusic, which keeps no channels: the drum
    channel, else the file's first melodic channel).
  ticks_per_beat: ticks per quarter note.
  end_tick: the tick of the file's last event (where unclosed notes end).
  tempo_bpm: the file's first tempo (120 when it sets none).
  time_signature: its first time signature as "numerator/denominator" ("4/4" when none).
  unclosed: bool[N], the notes the file never closed (they end at end_tick); None: none.
  pedal: int64[K, 3], the sustain pedal's events (controller 64) in the order they apply:
    (tick, channel, 1 when pressed (value 64 or more) else 0); None: none.
  """

  onsets: np.ndarray
  ends: np.ndarray
  pitches: np.ndarray
  velocities: np.ndarray
  channels: np.ndarray
  ticks_per_beat: int
  end_tick: int
  tempo_bpm: float = DEFAULT_TEMPO_BPM
  time_signature: str = DEFAULT_TIME_SIGNATURE
  unclosed: np.ndarray | None = None
  pedal: np.ndarray | None = None

  @property
  def num_unclosed(self) -> int:
    return 0 if self.unclosed is None else int(np.count_nonzero(self.unclosed))


def source_name(source: MidiSource, name: str | None = None) -> str:
  """A human-readable name for error messages."""
  if name is not None:
    return name
  if isinstance(source, (str, os.PathLike)):
    return os.fspath(source)
  if isinstance(source, mido.MidiFile) and source.filename:
    return str(source.filename)
  return "<MIDI data>"


def _bytes_of(source: MidiSource, name: str) -> bytes:
  """The file's bytes, checked cheaply (MidiError with the reason) before any parser."""
  if isinstance(source, (str, os.PathLike)):
    try:
      size = os.path.getsize(source)
      if size > MAX_FILE_BYTES:
        raise MidiError(f"{name}: file is {size} bytes, more than {MAX_FILE_BYTES}")
      with open(source, "rb") as f:
        data = f.read()
    except OSError as e:
      raise MidiError(f"{name}: cannot read file: {e.strerror or e}") from e
  elif isinstance(source, (bytes, bytearray)):
    data = bytes(source)
  else:
    raise TypeError(f"expected a path, bytes or mido.MidiFile, got {type(source).__name__}")
  _check_header(data, name)
  return data


def read_midi(source: MidiSource, *, name: str | None = None) -> mido.MidiFile:
  """Parses `source` (a path, bytes or a mido.MidiFile) into a mido.MidiFile."""
  name = source_name(source, name)
  if isinstance(source, mido.MidiFile):
    midi = source
  else:
    data = _bytes_of(source, name)
    try:
      midi = mido.MidiFile(file=io.BytesIO(data), clip=True)
    except MidiError:
      raise
    except Exception as e:  # mido raises many types for malformed files
      raise MidiError(f"{name}: malformed MIDI: {type(e).__name__}: {e}") from e
  if midi.type not in (0, 1, 2):
    raise MidiError(f"{name}: unknown MIDI file type {midi.type}")
  if midi.ticks_per_beat is None or midi.ticks_per_beat <= 0:
    if midi.ticks_per_beat is not None and midi.ticks_per_beat < 0:
      raise MidiError(f"{name}: SMPTE time division is not supported (only ticks per beat)")
    raise MidiError(f"{name}: ticks per beat is {midi.ticks_per_beat}; it must be positive")
  return midi


def _check_header(data: bytes, name: str) -> None:
  """Cheap checks that give a clear reason before mido sees the bytes."""
  if not data:
    raise MidiError(f"{name}: empty file")
  if data[:4] != b"MThd":
    raise MidiError(f"{name}: not a MIDI file (no 'MThd' header)")
  if len(data) < 14:
    raise MidiError(f"{name}: truncated header ({len(data)} bytes)")
  header_len = int.from_bytes(data[4:8], "big")
  if header_len < 6 or 8 + header_len > len(data):
    raise MidiError(f"{name}: header chunk length {header_len} is invalid")
  division = int.from_bytes(data[12:14], "big")
  if division & 0x8000:
    raise MidiError(f"{name}: SMPTE time division is not supported (only ticks per beat)")
  if division == 0:
    raise MidiError(f"{name}: ticks per beat is 0; it must be positive")
  # Walk the chunks: a length past the end of the data is truncation.
  pos = 8 + header_len
  while pos + 8 <= len(data):
    length = int.from_bytes(data[pos + 4:pos + 8], "big")
    if pos + 8 + length > len(data):
      raise MidiError(
          f"{name}: chunk {data[pos:pos + 4]!r} at byte {pos} claims {length} bytes, "
          f"past the end of the data (truncated file?)")
    pos += 8 + length


@dataclasses.dataclass
class _Events:
  """A file's note events in play order, and what else encoding reports."""

  notes: list  # (tick, kind, track, order, channel, pitch, velocity); kind 0 off, 1 on
  pedal: list = dataclasses.field(default_factory=list)  # (tick, track, order, channel, down)
  end_tick: int = 0
  tempo: tuple | None = None  # (tick, track, order, bpm) of the first tempo
  time_signature: tuple | None = None  # (tick, track, order, "n/d")


def _collect_events(midi: mido.MidiFile, name: str) -> _Events:
  """Every track's events in absolute ticks; absurd delta times are a MidiError."""
  max_tick = MAX_FILE_QUARTERS * int(midi.ticks_per_beat)
  events = _Events(notes=[])
  for track_index, track in enumerate(midi.tracks):
    tick = 0
    for order, msg in enumerate(track):
      tick += msg.time
      if tick > max_tick:
        raise MidiError(f"{name}: absurd delta times (an event at tick {tick}, over "
                        f"{MAX_FILE_QUARTERS} quarter notes into the file)")
      where = (tick, track_index, order)
      if msg.type == "note_on" or msg.type == "note_off":
        is_on = int(msg.type == "note_on" and msg.velocity > 0)
        events.notes.append((tick, is_on, track_index, order, msg.channel, msg.note,
                             msg.velocity if is_on else 0))
      elif msg.type == "control_change" and msg.control == SUSTAIN_CONTROLLER:
        events.pedal.append(where + (msg.channel, int(msg.value >= 64)))
      elif msg.type == "set_tempo" and msg.tempo > 0:
        if events.tempo is None or where < events.tempo[:3]:
          events.tempo = where + (float(mido.tempo2bpm(msg.tempo)),)
      elif msg.type == "time_signature":
        if events.time_signature is None or where < events.time_signature[:3]:
          events.time_signature = where + (f"{msg.numerator}/{msg.denominator}",)
    events.end_tick = max(events.end_tick, tick)
  # At one tick offs come first (kind 0 < 1): an on and an off of one pitch at the same
  # tick re-strike it, whatever their order in the file.
  events.notes.sort()
  events.pedal.sort()
  return events


READERS = ("auto", "mido", "symusic")


def fast_reader_available() -> bool:
  """True when symusic (C++ MIDI parsing) is installed."""
  return importlib.util.find_spec("symusic") is not None


def reader_in_use(reader: str = "auto") -> str:
  """Which parser `read_notes(reader=...)` runs: 'mido' or 'symusic-<version>'."""
  if reader not in READERS:
    raise ValueError(f"--midi_reader must be one of {', '.join(READERS)}, got {reader!r}")
  if reader == "mido" or (reader == "auto" and not fast_reader_available()):
    return "mido"
  if not fast_reader_available():
    raise ImportError("--midi_reader=symusic needs the symusic package: pip install "
                      "'musicgen-jax[fast]'")
  import symusic  # pylint: disable=g-import-not-at-top
  return f"symusic-{symusic.__version__}"


def read_notes(source: MidiSource, *, include_drums: bool = False, name: str | None = None,
               reader: str = "auto") -> tuple[NoteTable, int]:
  """Reads the notes of a MIDI file.

  Tracks are merged in time order (type 0 and 1 alike; type 2 tracks are treated
  the same way); at one tick note-offs apply before note-ons. A note-off, or a
  note-on with velocity 0, closes the oldest open note of the same channel and
  pitch; notes never closed end at the file's last event.

  reader: 'mido' (the Python parser, the reference), 'symusic' (C++, much faster), or
  'auto' (symusic when installed). Both give the same notes on every file: symusic pairs
  note-ons and note-offs within each track and channel and drops notes never closed, so
  its notes are used only where a lean walk over the file's bytes shows they are the
  specification's (every note-on closed by exactly one note-off, no note closed at its own
  tick, no pitch of two tracks closed out of order); any other file (and one symusic cannot
  parse, or finds no notes in) is read by mido, whose errors are the reference.

  Returns:
    (notes, dropped_drums): the notes, and how many drum-channel notes were
    skipped (0 when include_drums).
  """
  name = source_name(source, name)
  if reader_in_use(reader) != "mido" and not isinstance(source, mido.MidiFile):
    data = _bytes_of(source, name)
    try:
      read = _read_notes_symusic(data, name, include_drums)
      if read is not None:
        return read
    except MidiError:
      raise
    except Exception:  # pylint: disable=broad-except  # mido decides, and names the reason
      pass
    source = data  # not plainly symusic's to read: mido's notes, or its verdict
  return _read_notes_mido(read_midi(source, name=name), name, include_drums)


def _read_notes_mido(midi: mido.MidiFile, name: str,
                     include_drums: bool) -> tuple[NoteTable, int]:
  events = _collect_events(midi, name)
  open_notes: dict[tuple[int, int], collections.deque] = collections.defaultdict(
      collections.deque)
  onsets, ends, pitches, velocities, channels = [], [], [], [], []
  dropped_drums = 0
  for tick, is_on, _, _, channel, pitch, velocity in events.notes:
    if channel == DRUM_CHANNEL and not include_drums:
      dropped_drums += is_on
    elif is_on:
      open_notes[(channel, pitch)].append(len(onsets))
      onsets.append(tick)
      ends.append(-1)
      pitches.append(pitch)
      velocities.append(velocity)
      channels.append(channel)
    elif open_notes.get((channel, pitch)):
      ends[open_notes[(channel, pitch)].popleft()] = tick
  ends_arr = np.asarray(ends, dtype=np.int64)
  unclosed = ends_arr < 0
  ends_arr[unclosed] = events.end_tick
  notes = NoteTable(
      onsets=np.asarray(onsets, dtype=np.int64), ends=ends_arr,
      pitches=np.asarray(pitches, dtype=np.int32),
      velocities=np.asarray(velocities, dtype=np.int32),
      channels=np.asarray(channels, dtype=np.int32),
      ticks_per_beat=int(midi.ticks_per_beat), end_tick=events.end_tick,
      tempo_bpm=events.tempo[3] if events.tempo else DEFAULT_TEMPO_BPM,
      time_signature=events.time_signature[3] if events.time_signature else
      DEFAULT_TIME_SIGNATURE, unclosed=unclosed,
      pedal=np.asarray([(t, c, d) for t, _, _, c, d in events.pedal], np.int64).reshape(-1, 3))
  return notes, dropped_drums


# Data bytes after the status byte of each channel message (high nibble) and of the system
# messages mido reads inside a track; any other status byte is mido's to refuse.
_CHANNEL_DATA = {0x8: 2, 0x9: 2, 0xA: 2, 0xB: 2, 0xC: 1, 0xD: 1, 0xE: 2}
_SYSTEM_DATA = {0xF1: 1, 0xF2: 2, 0xF3: 1, 0xF6: 0, 0xF8: 0, 0xFA: 0, 0xFB: 0, 0xFC: 0,
                0xFE: 0}


@dataclasses.dataclass
class _Scan:
  """What `_scan_note_events` counts in a file, as mido reads it."""

  note_ons: int = 0
  note_offs: int = 0  # note-offs and note-ons of velocity 0
  end_tick: int = 0  # the tick of the last event
  note_channels: int = 0  # bit mask of the channels whose notes start
  pedal: list = dataclasses.field(default_factory=list)  # (tick, track, order, channel, down)

  @property
  def melodic_channels(self) -> list[int]:
    return [c for c in range(16) if self.note_channels >> c & 1 and c != DRUM_CHANNEL]

  def pedal_events(self) -> np.ndarray:
    """int64[K, 3] (tick, channel, down), in the order mido applies them."""
    return np.asarray([e[:1] + e[3:] for e in sorted(self.pedal)], np.int64).reshape(-1, 3)


def _scan_note_events(data: bytes) -> _Scan | None:
  """Counts a file's note events and collects its sustain-pedal events, as mido reads it.

  A lean walk over the bytes (no message objects; about 30 times faster than mido) that
  follows mido's reading: the header's number of tracks, running status (which meta events
  neither set nor cancel), clipped data bytes. A note-on of velocity 0 is a note-off. None
  where anything is out of the ordinary (a chunk that is not a track, an event running past
  its track, an undefined status byte): mido then reads the file and gives the verdict.
  """
  pos = 8 + int.from_bytes(data[4:8], "big")
  scan = _Scan()
  try:
    for track in range(int.from_bytes(data[10:12], "big")):
      if data[pos:pos + 4] != b"MTrk":
        return None
      end = pos + 8 + int.from_bytes(data[pos + 4:pos + 8], "big")
      if not _scan_track(data, pos + 8, end, track, scan):
        return None
      pos = end
  except IndexError:
    return None
  return scan


def _variable_int(data: bytes, i: int) -> tuple[int, int]:
  value = 0
  while True:
    byte = data[i]
    i += 1
    value = (value << 7) | (byte & 0x7F)
    if byte < 0x80:
      return value, i


def _scan_track(data: bytes, i: int, end: int, track: int, scan: _Scan) -> bool:
  """Adds one track chunk to `scan`; False where it is out of the ordinary.

  The hot loop of the fast reader: locals only, and a one-byte delta time (most of them)
  read inline.
  """
  tick, status, ons, offs, channels, pedal = 0, None, 0, 0, 0, scan.pedal
  while i < end:
    byte = data[i]
    if byte < 0x80:
      tick += byte
      i += 1
    else:
      delta, i = _variable_int(data, i)
      tick += delta
    byte = data[i]
    if byte >= 0x80:
      i += 1
      if byte != 0xFF:
        status = byte
    elif status is None:
      return False
    else:
      byte = status
    if byte < 0xF0:
      kind = byte >> 4
      if kind == 0x9:
        if data[i + 1]:
          ons += 1
          channels |= 1 << (byte & 0xF)
        else:
          offs += 1
        i += 2
      elif kind == 0x8:
        offs += 1
        i += 2
      else:
        if kind == 0xB and data[i] == SUSTAIN_CONTROLLER:  # (tick, track, order, channel, down)
          pedal.append((tick, track, len(pedal), byte & 0xF, int(data[i + 1] >= 64)))
        i += _CHANNEL_DATA[kind]
    elif byte == 0xFF or byte in (0xF0, 0xF7):
      length, i = _variable_int(data, i + (byte == 0xFF))  # past the meta type
      i += length
    elif byte in _SYSTEM_DATA:
      i += _SYSTEM_DATA[byte]
    else:
      return False
  scan.note_ons += ons
  scan.note_offs += offs
  scan.note_channels |= channels
  scan.end_tick = max(scan.end_tick, tick)
  return i == end


def _pairs_cross(key: np.ndarray, onsets: np.ndarray, ends: np.ndarray) -> bool:
  """True where a note of one key (pitch, drum or not) starts after another yet ends first.

  mido closes the oldest open note of a channel and pitch, across tracks, so its notes of
  one key, taken by onset, end in order; symusic pairs within each track and channel. Where
  symusic's notes end in onset order too (always so within one track), the pairings agree.
  """
  order = np.lexsort((ends, onsets, key))
  key, ends = key[order], ends[order]
  return bool(np.any((key[1:] == key[:-1]) & (ends[1:] < ends[:-1])))


def _oldest_first(key: np.ndarray, onsets: np.ndarray, ends: np.ndarray) -> np.ndarray:
  """The ends re-paired as one channel's note-offs close its oldest open notes: per key,
  the k-th note by onset gets the k-th end in time."""
  by_onset = np.lexsort((np.arange(key.size), onsets, key))
  repaired = np.empty_like(ends)
  repaired[by_onset] = ends[np.lexsort((ends, key))]
  return repaired


def _read_notes_symusic(data: bytes, name: str,
                        include_drums: bool) -> tuple[NoteTable, int] | None:
  """symusic's notes where they are the specification's (see `read_notes`), else None."""
  import symusic  # pylint: disable=g-import-not-at-top
  scan = _scan_note_events(data)
  if scan is None:
    return None
  score = symusic.Score.from_midi(data)
  tpb = int(score.ticks_per_quarter)
  if tpb <= 0:
    raise MidiError(f"{name}: ticks per beat is {tpb}; it must be positive")
  if scan.end_tick > MAX_FILE_QUARTERS * tpb:
    return None  # mido names the event
  tracks = [t for t in score.tracks if len(t.notes)]
  arrays = [t.notes.numpy() for t in tracks]
  num_notes = sum(len(a["time"]) for a in arrays)
  if not num_notes or not scan.note_ons == scan.note_offs == num_notes:
    return None  # notes never closed, stray note-offs, or none at all
  if any(np.any(a["duration"] <= 0) for a in arrays):
    return None  # an on and an off at one tick: mido applies the off first
  cat = lambda values, dtype: np.concatenate(values).astype(dtype)
  drum = cat([np.full(len(a["time"]), t.is_drum) for t, a in zip(tracks, arrays)], bool)
  onsets, pitches = cat([a["time"] for a in arrays], np.int64), cat([a["pitch"] for a in arrays],
                                                                  np.int64)
  ends = onsets + cat([a["duration"] for a in arrays], np.int64)
  key = pitches + 128 * drum
  if _pairs_cross(key, onsets, ends):
    # One pitch sounding in two tracks, closed out of order: mido closes the oldest note of
    # the channel. With one melodic channel (and drums on theirs), so can we.
    if len(scan.melodic_channels) > 1:
      return None
    ends = _oldest_first(key, onsets, ends)
  # symusic keeps no channels: the pedal's events (from the scan) can be matched to the
  # notes where the notes have one melodic channel (and drums their own).
  pedal = scan.pedal_events()
  if len(pedal) and len(scan.melodic_channels) > 1:
    return None
  melodic = scan.melodic_channels[0] if scan.melodic_channels else 0
  keep = ~drum | include_drums
  order = np.argsort(onsets[keep], kind="stable")
  take = lambda values, dtype: values[keep][order].astype(dtype)
  first = lambda events: events[int(np.argmin([e.time for e in events]))] if len(events) else None
  tempo, meter = first(score.tempos), first(score.time_signatures)
  notes = NoteTable(
      onsets=take(onsets, np.int64), ends=take(ends, np.int64),
      pitches=take(pitches, np.int32),
      velocities=take(cat([a["velocity"] for a in arrays], np.int32), np.int32),
      channels=take(np.where(drum, DRUM_CHANNEL, melodic), np.int32), ticks_per_beat=tpb,
      end_tick=int(scan.end_tick),
      tempo_bpm=float(tempo.qpm) if tempo is not None else DEFAULT_TEMPO_BPM,
      time_signature=(f"{meter.numerator}/{meter.denominator}" if meter is not None
                      else DEFAULT_TIME_SIGNATURE), pedal=pedal)
  return notes, int(np.count_nonzero(~keep))


def next_onset(groups: np.ndarray, onsets: np.ndarray) -> np.ndarray:
  """int64[N]: for each note, the next later onset of a note of its group (a pitch, or a
  channel and pitch), or the largest int64 where there is none."""
  groups, onsets = np.asarray(groups, np.int64), np.asarray(onsets, np.int64)
  flat = groups * (int(onsets.max(initial=0)) + 2) + onsets  # sorts by group, then onset
  order = np.argsort(flat, kind="stable")
  flat, g, o = flat[order], groups[order], onsets[order]
  # The first later entry of the same group: search past every entry equal to this one.
  after = np.searchsorted(flat, flat, side="right")
  found = after < flat.size
  found[found] = g[after[found]] == g[found]
  result = np.full(flat.size, np.iinfo(np.int64).max)
  result[order[found]] = o[after[found]]
  return result


def sustain(notes: NoteTable) -> tuple[NoteTable, np.ndarray]:
  """Applies the sustain pedal, as a pianist hears it: a note whose key is released while
  the pedal of its channel is down (its last event at or before the release says pressed)
  sounds until the pedal lifts, or until its pitch is struck again, whichever is first; a
  pedal never lifted holds to the file's last event.

  Returns:
    (the notes with their ends extended, bool[N]: which were extended).
  """
  ends = notes.ends
  if notes.pedal is None or not len(notes.pedal) or not len(ends):
    return notes, np.zeros(len(ends), bool)
  release = ends.copy()
  for channel in np.unique(notes.pedal[:, 1]):
    events = notes.pedal[notes.pedal[:, 1] == channel]
    mine = notes.channels == channel
    last = np.searchsorted(events[:, 0], ends[mine], side="right") - 1
    held = (last >= 0) & (events[np.maximum(last, 0), 2] == 1)
    ups = np.append(events[events[:, 2] == 0, 0], notes.end_tick)  # never lifted: the end
    lifted = ups[np.minimum(np.searchsorted(ups[:-1], ends[mine], side="right"), len(ups) - 1)]
    release[mine] = np.where(held, np.maximum(lifted, ends[mine]), ends[mine])
  restrike = next_onset(notes.channels.astype(np.int64) * 128 + notes.pitches, notes.onsets)
  extended_end = np.maximum(ends, np.minimum(release, restrike))
  extended = extended_end > ends
  return dataclasses.replace(notes, ends=extended_end), extended


def _time_signature_message(text: str) -> mido.MetaMessage:
  try:
    numerator, denominator = (int(x) for x in text.split("/"))
    return mido.MetaMessage("time_signature", numerator=numerator, denominator=denominator,
                            time=0)
  except (ValueError, TypeError) as e:
    raise ValueError(f"time_signature must look like '3/4', got {text!r}") from e


def write_notes(onsets: np.ndarray, ends: np.ndarray, pitches: np.ndarray, *,
                velocity: int | np.ndarray = 80, ticks_per_beat: int = 480,
                tempo_bpm: float = 120.0, program: int = 0,
                time_signature: str | None = None) -> mido.MidiFile:
  """Writes notes (ticks) as a type-0 MIDI file on channel 1.

  At the same tick note-offs come before note-ons, so a pitch re-struck where
  it ends reads back as two notes in any reader. The tempo (and a time signature,
  when given) open the track. `velocity`: one for every note, or int[N] per note.
  """
  velocities = np.broadcast_to(np.asarray(velocity, np.int64), np.shape(pitches))
  if velocities.size and not (velocities.min() >= 1 and velocities.max() <= 127):
    raise ValueError(f"velocity must be in 1..127, got {velocity}")
  if not tempo_bpm > 0:
    raise ValueError(f"tempo_bpm must be positive, got {tempo_bpm}")
  if not 1 <= ticks_per_beat <= 0x7FFF:
    raise ValueError(f"ticks_per_beat must be in 1..32767, got {ticks_per_beat}")
  events = []
  for on, off, pitch, vel in zip(np.asarray(onsets).tolist(), np.asarray(ends).tolist(),
                                 np.asarray(pitches).tolist(), velocities.tolist()):
    events.append((off, 0, pitch, 0))
    events.append((on, 1, pitch, vel))
  events.sort()
  track = mido.MidiTrack()
  track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(tempo_bpm), time=0))
  if time_signature:
    track.append(_time_signature_message(time_signature))
  track.append(mido.Message("program_change", program=program, channel=0, time=0))
  now = 0
  for tick, is_on, pitch, vel in events:
    track.append(mido.Message("note_on" if is_on else "note_off", note=pitch, velocity=vel,
                              channel=0, time=tick - now))
    now = tick
  track.append(mido.MetaMessage("end_of_track", time=0))
  midi = mido.MidiFile(type=0, ticks_per_beat=ticks_per_beat)
  midi.tracks.append(track)
  return midi
