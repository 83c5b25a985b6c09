"""The frame: constants, notes <-> frames, frames <-> MIDI.

A frame is one onset. Its parts (`FrameLayout` is their one description):

  notes     columns 0..105: `frame[i] = 1.0` when MIDI pitch `LOWEST_PITCH + i` starts there
            (pitches 21..126).
  duration  column 106 (`DURATION_INDEX`): the time to the next onset in quarter notes
            (tempo-independent).
  velocity  optional, 1 column: the onset's mean MIDI velocity (1..127; 0 for a rest).
  lengths   optional, 106 columns: each starting note's own length in quarter notes.
  metre     optional, 2 columns, never stored: where the frame starts in its bar and the
            bar's length (quarters), derived when pieces load (`add_metre`).

The functions here default to the study's 107-dim frame (notes and duration, notes cut at
the next onset, pedal ignored). New training runs use `DataConfig`'s defaults instead: note
lengths, the sustain pedal applied (`sustain_pedal="apply"`: a pedalled note sounds until
the pedal lifts or its pitch is struck again) and metre, 215 columns (216 with velocity).
Onsets and note ends are quantised to a grid of `steps_per_quarter` steps per quarter note.

Duration modes:
  "ioi" (default): a frame lasts until the next onset. Where nothing sounds for
    a while before the next onset, the frame lasts until its last sounding note
    ends and an empty frame (no notes) carries the rest. The last frame lasts
    until its last note ends. Decoding plays each frame's notes for the frame's
    duration from the running time, then advances by it, so
    `midi_to_frames(frames_to_midi(f)) == f` and every in-range (quantised
    onset, pitch) survives encoding.
  "note": a frame lasts as long as the longest note of its chord, and decoding
    plays frames back to back (the seed study's encoding; it loses onset
    timing where notes overlap).

Note lengths (`note_lengths=True`, "ioi" mode): a note sounds for its own length, held
across later onsets or ending between them, instead of being cut at the next onset (which
keeps a median 71% of real piano music's sounding time). A pitch struck again while it
sounds ends the earlier note there (`cut_at_restrike`). Exact both ways: MIDI -> frames ->
MIDI keeps every in-range note's quantised (onset, pitch, end), so cut, and frames -> MIDI
-> frames is the identity.
"""

from __future__ import annotations

import dataclasses
import functools

import mido
import numpy as np

from musicgen_jax import midi as midi_lib
from musicgen_jax.midi import MidiError, MidiSource

NUM_NOTES = 106  # pitches 21 (A0) .. 126
LOWEST_PITCH = 21  # A0
HIGHEST_PITCH = LOWEST_PITCH + NUM_NOTES - 1  # 126
FRAME_DIM = NUM_NOTES + 1  # 106 note onsets + duration in quarter notes
DURATION_INDEX = NUM_NOTES  # frame[DURATION_INDEX] is the duration
PIANO_KEYS = 88  # pitches 21..108, the first 88 note columns: the benchmarks' notes
# Optional dynamics: frames with velocity carry one more column, the mean MIDI velocity
# (1..127) of the onset's notes (0 for an empty frame).
VELOCITY_INDEX = FRAME_DIM
DURATION_MODES = ("ioi", "note")
SUSTAIN_PEDAL_MODES = ("ignore", "apply")


@dataclasses.dataclass(frozen=True)
class FrameLayout:
  """The parts of a frame and the columns they take: the one description that the codec,
  the heads, the shape checks and the plots read.

  notes: columns 0..105, 1.0 where MIDI pitch 21 + i starts at the frame's onset.
  duration: column 106, the frame's duration in quarter notes.
  velocity (when `velocity`): column 107, the onset's mean MIDI velocity (0 for a rest).
  lengths (when `lengths`): the next 106 columns, the length in quarter notes of each note
    that starts here (0 where none does): a note sounds for its own length, held across
    later onsets or ending between them, instead of until the next onset.
  metre (when `metre`): two last columns, where the frame starts within its bar and the
    bar's length, both in quarter notes. Never stored: derived from the running time and
    the piece's time signature when the pieces are loaded (`add_metre`) and carried by
    the sampler; models read them as input features and predict nothing of them.
  """

  velocity: bool = False
  lengths: bool = False
  metre: bool = False

  notes = slice(0, NUM_NOTES)
  duration_index = DURATION_INDEX

  @property
  def width(self) -> int:
    return FRAME_DIM + int(self.velocity) + NUM_NOTES * int(self.lengths) + 2 * int(self.metre)

  @property
  def velocity_index(self) -> int | None:
    return VELOCITY_INDEX if self.velocity else None

  @property
  def length_columns(self) -> slice | None:
    start = FRAME_DIM + int(self.velocity)
    return slice(start, start + NUM_NOTES) if self.lengths else None

  @property
  def metre_columns(self) -> slice | None:
    """(bar position, bar length) in quarters, the frame's last two columns."""
    start = FRAME_DIM + int(self.velocity) + NUM_NOTES * int(self.lengths)
    return slice(start, start + 2) if self.metre else None

  @property
  def stored(self) -> FrameLayout:
    """The layout without the derived metre columns: what the codec writes and reads."""
    return FrameLayout(velocity=self.velocity, lengths=self.lengths)

  @property
  def parts(self) -> tuple[str, ...]:
    return (("notes", "duration") + (("velocity",) if self.velocity else ()) +
            (("lengths",) if self.lengths else ()) + (("metre",) if self.metre else ()))

  def describe(self) -> str:
    return f"{self.width} ({', '.join(self.parts)})"

  @classmethod
  def for_width(cls, width: int) -> FrameLayout | None:
    return next((layout for layout in LAYOUTS if layout.width == width), None)


LAYOUTS = tuple(FrameLayout(velocity=v, lengths=l, metre=m)
                for m in (False, True) for l in (False, True) for v in (False, True))


def frame_layout(frames, what: str = "frames", dims: str | None = "T") -> FrameLayout:
  """The layout of `frames` (an array or its shape); a ValueError naming `what` otherwise.

  dims: the leading axes as the message names them ("T", "batch, P"); their number is
  checked too. None: any leading axes.
  """
  shape = tuple(frames) if isinstance(frames, tuple) else tuple(np.shape(frames))
  layout = FrameLayout.for_width(shape[-1]) if shape else None
  if layout is None or (dims is not None and len(shape) != len(dims.split(",")) + 1):
    leading = f"{dims}, " if dims is not None else "..., "
    widths = ", ".join(str(w) for w in sorted(l.width for l in LAYOUTS))
    raise ValueError(f"{what} must be [{leading}F] with F = {FRAME_DIM} (notes, duration), + 1 "
                     f"with velocity, + {NUM_NOTES} with note lengths, + 2 with metre (one of "
                     f"{widths}); got shape {shape}")
  return layout

__all__ = [
    "DURATION_INDEX", "DURATION_MODES", "FRAME_DIM", "HIGHEST_PITCH", "LOWEST_PITCH",
    "NUM_NOTES", "PIANO_KEYS", "VELOCITY_INDEX", "EncodeStats", "FrameLayout", "MidiError",
    "add_metre", "bar_steps", "encode_midi", "frame_layout", "frames_to_midi", "next_bar_step",
    "strip_metre",
    "duration_classes", "duration_steps", "frame_steps", "frames_to_notes", "midi_to_frames",
    "notes_to_frames", "pitch_name", "quarters_of_class",
]


def duration_steps(quarters, steps_per_quarter: int, *, xp=np):
  """Durations in quarter notes -> whole grid steps (round half to even), as floats.

  `xp` is numpy or jax.numpy, so the codec, the losses and the statistics share it.
  """
  return xp.round(xp.asarray(quarters) * steps_per_quarter)


def duration_classes(quarters, steps_per_quarter: int, num_classes: int, *, xp=np):
  """The categorical duration class: class k means (k + 1) / steps_per_quarter quarters.

  Returns int32[...] clip(round(quarters * steps_per_quarter), 1, num_classes) - 1: longer
  durations fall in the last class, shorter ones (and 0) in the first.
  """
  steps = duration_steps(quarters, steps_per_quarter, xp=xp)
  return (xp.clip(steps, 1, num_classes) - 1).astype(xp.int32)


@functools.lru_cache(maxsize=None)
def quarters_of_class(steps_per_quarter: int, num_classes: int) -> np.ndarray:
  """float32[num_classes]: class k -> (k + 1) / steps_per_quarter quarter notes.

  Divided on the host, so each value is the correctly rounded float32 quotient (a compiled
  division by a constant may become a multiplication by its reciprocal, one ulp off): the
  value the codec writes. Read-only.
  """
  table = np.arange(1, num_classes + 1, dtype=np.float32) / np.float32(steps_per_quarter)
  table.flags.writeable = False
  return table


@dataclasses.dataclass(frozen=True)
class EncodeStats:
  """What encoding one file kept and dropped (nothing is dropped silently)."""

  num_notes: int  # in-range notes encoded (chord notes on one onset count once each)
  num_frames: int  # frames produced, empty rest frames included
  num_empty_frames: int  # rest frames
  dropped_out_of_range: int  # notes with pitch outside 21..126
  dropped_drums: int  # notes on the drum channel (skipped unless include_drums)
  merged_duplicates: int  # same pitch struck twice on one quantised onset
  tempo_bpm: float = midi_lib.DEFAULT_TEMPO_BPM  # the source's first tempo
  time_signature: str = midi_lib.DEFAULT_TIME_SIGNATURE  # its first time signature
  velocity_min: int = 0  # the encoded notes' softest and loudest MIDI velocity (0: none)
  velocity_max: int = 0
  unclosed_notes: int = 0  # encoded notes the file never closed (they end at its last event)
  pedal_extended_notes: int = 0  # encoded notes the sustain pedal held past their release
  # The first onset's grid step from the file's start: the leading silence the frames drop
  # (a pickup's place in its bar), from which `add_metre` counts the bars.
  start_step: int = 0

  @property
  def constant_velocity(self) -> bool:
    """Every note has the same velocity: the file carries no dynamics."""
    return self.num_notes > 0 and self.velocity_min == self.velocity_max


def _check_settings(steps_per_quarter: int, duration_mode: str) -> None:
  if int(steps_per_quarter) != steps_per_quarter or steps_per_quarter < 1:
    raise ValueError(f"steps_per_quarter must be a positive integer, got {steps_per_quarter}")
  if duration_mode not in DURATION_MODES:
    raise ValueError(
        f"duration_mode must be one of {', '.join(DURATION_MODES)}, got {duration_mode!r}")


def _durations(onsets: np.ndarray, chord_end: np.ndarray, duration_mode: str):
  """(row of each onset's frame, its duration, rest frames' rows and durations), in steps."""
  if duration_mode == "note":
    return np.arange(onsets.size), chord_end - onsets, np.zeros(0, np.int64), np.zeros(0)
  # ioi: `sounding_end[k]` is when the last note struck at or before onset k ends.
  sounding_end = np.maximum.accumulate(chord_end)
  next_onset = np.append(onsets[1:], sounding_end[-1])
  rest = next_onset - sounding_end  # > 0: silence before the next onset
  has_rest = rest > 0
  has_rest[-1] = False
  durations = np.where(has_rest, sounding_end - onsets, next_onset - onsets)
  # Frame k lands at row k + (number of rests before it); rests follow their frame.
  rows = np.arange(onsets.size) + np.concatenate([[0], np.cumsum(has_rest)[:-1]])
  return rows, durations, rows[has_rest] + 1, rest[has_rest]


def cut_at_restrike(onset_steps: np.ndarray, end_steps: np.ndarray,
                    pitches: np.ndarray) -> np.ndarray:
  """int64[N]: each note's end, cut where the same pitch is struck again (as a key sounds
  once: the earlier note ends at the re-strike). Notes of one pitch and onset are one note.

  Where a file's note-offs close the oldest open note of a pitch (as every reader here
  pairs them), the ends of one pitch come in onset order, so the cut keeps every moment a
  pitch sounds, and the notes it writes back never overlap: decoding then re-encoding is
  exact.
  """
  return np.minimum(np.asarray(end_steps, np.int64),
                    midi_lib.next_onset(np.asarray(pitches), np.asarray(onset_steps)))


def _length_columns(frames, rows, onsets, ends, pitches, layout, steps_per_quarter) -> None:
  """Writes each onset's note lengths (quarters; the longest of a duplicated note)."""
  lengths = np.zeros((frames.shape[0], NUM_NOTES), np.int64)
  np.maximum.at(lengths, (rows, pitches - LOWEST_PITCH), ends - onsets)
  frames[:, layout.length_columns] = lengths / steps_per_quarter


def notes_to_frames(onset_steps: np.ndarray, end_steps: np.ndarray, pitches: np.ndarray, *,
                    steps_per_quarter: int = 12, duration_mode: str = "ioi",
                    velocities: np.ndarray | None = None,
                    note_lengths: bool = False) -> np.ndarray:
  """Encodes quantised notes as frames.

  Args:
    onset_steps, end_steps: int[N] grid steps; ends are raised to at least one
      step after the onset.
    pitches: int[N] MIDI pitches, all within LOWEST_PITCH..HIGHEST_PITCH.
    steps_per_quarter: grid resolution.
    duration_mode: "ioi" or "note".
    velocities: int[N] MIDI velocities, or None. Given, each frame gains a column
      (VELOCITY_INDEX): the rounded mean velocity of its onset's notes, 0 for a rest.
    note_lengths: each frame gains the lengths of its notes (see `FrameLayout`), a note
      being cut where its pitch is struck again (`cut_at_restrike`); "ioi" mode only.

  Returns:
    float32[T, F] frames (T = 0 when there are no notes), F = 107 (+ 1 with velocities,
    + 106 with note lengths).
  """
  _check_settings(steps_per_quarter, duration_mode)
  if note_lengths and duration_mode != "ioi":
    raise ValueError("note lengths need duration_mode='ioi' (frames that last until the next "
                     "onset)")
  layout = FrameLayout(velocity=velocities is not None, lengths=note_lengths)
  onset_steps = np.asarray(onset_steps, dtype=np.int64)
  end_steps = np.maximum(np.asarray(end_steps, dtype=np.int64), onset_steps + 1)
  pitches = np.asarray(pitches, dtype=np.int64)
  if onset_steps.size == 0:
    return np.zeros((0, layout.width), np.float32)
  if pitches.min() < LOWEST_PITCH or pitches.max() > HIGHEST_PITCH:
    raise ValueError(f"pitches must lie in {LOWEST_PITCH}..{HIGHEST_PITCH}")
  if note_lengths:
    end_steps = cut_at_restrike(onset_steps, end_steps, pitches)
  onsets, frame_of_note = np.unique(onset_steps, return_inverse=True)
  chord_end = np.full(onsets.size, np.iinfo(np.int64).min)
  np.maximum.at(chord_end, frame_of_note, end_steps)
  rows, durations, rest_rows, rests = _durations(onsets, chord_end, duration_mode)
  frames = np.zeros((onsets.size + rest_rows.size, layout.width), np.float32)
  frames[rows[frame_of_note], pitches - LOWEST_PITCH] = 1.0
  frames[rows, DURATION_INDEX] = durations
  frames[rest_rows, DURATION_INDEX] = rests
  frames[:, DURATION_INDEX] /= steps_per_quarter
  if velocities is not None:
    total = np.zeros(onsets.size)
    np.add.at(total, frame_of_note, np.asarray(velocities, np.float64))
    mean = total / np.bincount(frame_of_note, minlength=onsets.size)
    frames[rows, VELOCITY_INDEX] = np.clip(np.floor(mean + 0.5), 1, 127)
  if note_lengths:
    _length_columns(frames, rows[frame_of_note], onset_steps, end_steps, pitches, layout,
                    steps_per_quarter)
  return frames


def _quantise(ticks: np.ndarray, ticks_per_beat: int, steps_per_quarter: int) -> np.ndarray:
  """Rounds ticks to the nearest grid step (halves round up), in integers."""
  return (2 * ticks * steps_per_quarter + ticks_per_beat) // (2 * ticks_per_beat)


def encode_midi(source: MidiSource, *, steps_per_quarter: int = 12, duration_mode: str = "ioi",
                include_drums: bool = False, with_velocity: bool = False,
                name: str | None = None, reader: str = "auto",
                note_lengths: bool = False,
                sustain_pedal: str = "ignore") -> tuple[np.ndarray, EncodeStats]:
  """Like `midi_to_frames`, and also says what was kept and dropped.

  `reader` picks the MIDI parser (see `midi.read_notes`): 'auto', 'mido' or 'symusic'.
  `note_lengths`: frames carry each note's own length (see `FrameLayout`).
  `sustain_pedal`: 'apply' holds notes under the pedal (see `midi.sustain`) before
  quantising, 'ignore' keeps them as written.

  Returns:
    (frames float32[T, F] as `notes_to_frames` gives them, EncodeStats).
  Raises:
    MidiError: the file is unreadable or invalid; the message names it.
  """
  _check_settings(steps_per_quarter, duration_mode)
  if sustain_pedal not in SUSTAIN_PEDAL_MODES:
    raise ValueError(f"sustain_pedal must be one of {', '.join(SUSTAIN_PEDAL_MODES)}, got "
                     f"{sustain_pedal!r}")
  notes, dropped_drums = midi_lib.read_notes(source, include_drums=include_drums, name=name,
                                             reader=reader)
  extended = np.zeros(len(notes.onsets), bool)
  if sustain_pedal == "apply":
    notes, extended = midi_lib.sustain(notes)
  in_range = (notes.pitches >= LOWEST_PITCH) & (notes.pitches <= HIGHEST_PITCH)
  onset_steps = _quantise(notes.onsets[in_range], notes.ticks_per_beat, steps_per_quarter)
  end_steps = _quantise(notes.ends[in_range], notes.ticks_per_beat, steps_per_quarter)
  pitches, velocities = notes.pitches[in_range], notes.velocities[in_range]
  unclosed = int(np.count_nonzero(notes.unclosed[in_range])) if notes.unclosed is not None else 0
  pedalled = int(np.count_nonzero(extended[in_range]))
  start = int(onset_steps.min()) if onset_steps.size else 0
  # Leading silence is dropped: time starts at the first onset (stats.start_step keeps it).
  onset_steps, end_steps = onset_steps - start, end_steps - start
  frames = notes_to_frames(onset_steps, end_steps, pitches, steps_per_quarter=steps_per_quarter,
                           duration_mode=duration_mode,
                           velocities=velocities if with_velocity else None,
                           note_lengths=note_lengths)
  num_notes = int(frames[:, :NUM_NOTES].sum())
  stats = EncodeStats(
      num_notes=num_notes,
      num_frames=int(frames.shape[0]),
      num_empty_frames=int((frames[:, :NUM_NOTES].sum(axis=1) == 0).sum()),
      dropped_out_of_range=int((~in_range).sum()),
      dropped_drums=int(dropped_drums),
      merged_duplicates=int(pitches.size - num_notes),
      tempo_bpm=notes.tempo_bpm,
      time_signature=notes.time_signature,
      velocity_min=int(velocities.min()) if velocities.size else 0,
      velocity_max=int(velocities.max()) if velocities.size else 0,
      unclosed_notes=unclosed,
      pedal_extended_notes=pedalled,
      start_step=start,
  )
  return frames, stats


def midi_to_frames(source: MidiSource, *, steps_per_quarter: int = 12,
                   duration_mode: str = "ioi", include_drums: bool = False,
                   with_velocity: bool = False, reader: str = "auto",
                   note_lengths: bool = False, sustain_pedal: str = "ignore") -> np.ndarray:
  """Encodes a MIDI file (a path, bytes or a mido.MidiFile) as frames.

  Returns:
    float32[T, F], F = 107 (notes, duration), + 1 with_velocity (the onset's mean
    velocity), + 106 with note_lengths (`FrameLayout` gives the columns); a file with no
    in-range notes gives an empty [0, F] array (not an error). Use
    `encode_midi` to read how many notes were dropped.
  Raises:
    MidiError: the file is unreadable or invalid; the message names it.
  """
  frames, _ = encode_midi(source, steps_per_quarter=steps_per_quarter,
                          duration_mode=duration_mode, include_drums=include_drums,
                          with_velocity=with_velocity, reader=reader,
                          note_lengths=note_lengths, sustain_pedal=sustain_pedal)
  return frames


def has_velocity(frames) -> bool:
  """True for frames that carry dynamics (a velocity column after the duration)."""
  layout = FrameLayout.for_width(np.shape(frames)[-1])
  return layout is not None and layout.velocity


def _check_frames(frames: np.ndarray) -> np.ndarray:
  frames = np.asarray(frames, dtype=np.float64)
  layout = frame_layout(frames)
  if not np.all(np.isfinite(frames)):
    raise ValueError("frames contain non-finite values")
  if np.any(frames[:, DURATION_INDEX] < 0):
    raise ValueError("frames contain negative durations")
  if layout.lengths and np.any(frames[:, layout.length_columns] < 0):
    raise ValueError("frames contain negative note lengths")
  return frames


def frame_steps(frames: np.ndarray, steps_per_quarter: int = 12) -> np.ndarray:
  """int64[T + 1]: where each frame starts on the grid as decoding plays it, then the end.

  A frame lasts its duration rounded to the grid (at least one step when it has notes);
  the running time advances by it.
  """
  frames = _check_frames(frames)
  steps = duration_steps(frames[:, DURATION_INDEX], steps_per_quarter).astype(np.int64)
  has_notes = (frames[:, :NUM_NOTES] > 0.5).any(axis=1)
  steps = np.where(has_notes, np.maximum(steps, 1), steps)
  return np.concatenate([[0], np.cumsum(steps)])


def bar_steps(time_signature: str, steps_per_quarter: int) -> int:
  """Grid steps in one bar of "n/d" (n * 4 / d quarters, at least one step): 48 for 4/4 at
  12 steps per quarter, 36 for 6/8. An unreadable signature reads as 4/4."""
  try:
    numerator, denominator = (int(x) for x in str(time_signature).split("/"))
  except ValueError:
    numerator, denominator = 4, 4
  if numerator < 1 or denominator < 1:
    numerator, denominator = 4, 4
  return max(1, (4 * numerator * steps_per_quarter + denominator // 2) // denominator)


def add_metre(frames: np.ndarray, time_signature: str = midi_lib.DEFAULT_TIME_SIGNATURE,
              steps_per_quarter: int = 12, start_step: int = 0) -> np.ndarray:
  """frames float32[T, F] without metre -> float32[T, F + 2]: each frame's position in its
  bar and the bar's length, in quarters (see `FrameLayout`), from the running time as
  decoding plays it (`frame_steps`), the first frame `start_step` grid steps after a bar
  line (`EncodeStats.start_step`: the file's leading silence, so a pickup falls where the
  file puts it).

  The piece's first time signature holds throughout (a change of metre is not followed).
  """
  layout = frame_layout(frames)
  if layout.metre:
    raise ValueError("these frames already carry metre columns")
  bar = bar_steps(time_signature, steps_per_quarter)
  starts = frame_steps(frames, steps_per_quarter)[:-1] + int(start_step)
  metre = np.stack([(starts % bar) / steps_per_quarter,
                    np.full(starts.shape, bar / steps_per_quarter)], axis=-1)
  return np.concatenate([np.asarray(frames, np.float32), metre.astype(np.float32)], axis=-1)


def next_bar_step(frames, layout: FrameLayout, steps_per_quarter: int, *, xp=np):
  """Where the frame after each frame starts in its bar, from the metre columns: its grid
  step (int32[...]: the bar position advanced by the duration, modulo the bar). The one
  rule that the models' metre features and the sampler's carried position share; `xp` is
  numpy or jax.numpy."""
  position = frames[..., layout.metre_columns.start]
  bar = frames[..., layout.metre_columns.start + 1]
  steps = xp.maximum(xp.round(frames[..., layout.duration_index] * steps_per_quarter), 0.0)
  bar_steps = xp.maximum(xp.round(bar * steps_per_quarter), 1.0)
  return xp.mod(xp.round(position * steps_per_quarter) + steps, bar_steps).astype(xp.int32)


def strip_metre(frames: np.ndarray) -> np.ndarray:
  """The frames without their derived metre columns (unchanged where they have none)."""
  layout = frame_layout(frames, dims=None)
  return frames[..., :layout.stored.width] if layout.metre else frames


def frames_to_notes(frames: np.ndarray, *, steps_per_quarter: int = 12,
                    duration_mode: str = "ioi") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Decodes frames into notes on the grid.

  A note is on where `frame[i] > 0.5`. Each frame's notes start at the running time
  and last the frame's duration (see `frame_steps`), or, in frames with note lengths, each
  note its own length (at least one step, cut where its pitch is struck again). Both
  duration modes decode alike ("note" frames play back to back); `duration_mode` is only
  checked.

  Returns:
    (onset_steps int64[N], end_steps int64[N], pitches int64[N]).
  """
  _check_settings(steps_per_quarter, duration_mode)
  frames = _check_frames(frames)
  starts = frame_steps(frames, steps_per_quarter)
  frame_index, note_index = np.nonzero(frames[:, :NUM_NOTES] > 0.5)
  onsets = starts[frame_index]
  ends = starts[frame_index + 1]
  pitches = note_index.astype(np.int64) + LOWEST_PITCH
  layout = FrameLayout.for_width(frames.shape[1])
  if layout.lengths:
    lengths = frames[:, layout.length_columns][frame_index, note_index]
    ends = onsets + np.maximum(duration_steps(lengths, steps_per_quarter).astype(np.int64), 1)
    ends = cut_at_restrike(onsets, ends, pitches)
  return onsets, ends, pitches


def note_velocities(frames: np.ndarray) -> np.ndarray:
  """float32[N]: the velocity column of each note's frame, in `frames_to_notes`' order
  (frames with a velocity column only)."""
  frames = np.asarray(frames)
  frame_index = np.nonzero(frames[:, :NUM_NOTES] > 0.5)[0]
  return frames[frame_index, VELOCITY_INDEX]


NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def pitch_name(pitch: int | None) -> str:
  """MIDI pitch -> scientific name: 60 -> 'C4', 21 -> 'A0'; None -> '-'."""
  if pitch is None:
    return "-"
  return f"{NOTE_NAMES[pitch % 12]}{pitch // 12 - 1}"


def frames_to_midi(frames: np.ndarray, *, tempo_bpm: float = 120.0, velocity: int = 80,
                   steps_per_quarter: int = 12, duration_mode: str = "ioi",
                   ticks_per_beat: int = 480,
                   time_signature: str | None = None) -> mido.MidiFile:
  """Decodes frames float32[T, F] (any `FrameLayout`) into a type-0 mido.MidiFile (piano,
  channel 1).

  Frames with note lengths play each note for its own length, others until the next onset.
  Frames with metre columns start as far into their first bar as the first one says (the
  pickup as leading silence), so that the bars of `time_signature` fall where the metre has
  them and encoding the file gives the same metre back. Frames with a velocity
  column play each onset at its velocity (rounded, 1..127); otherwise every note has
  `velocity`. Both duration modes decode alike;
  `duration_mode` is accepted (and checked) so that callers can pass the mode the
  frames were encoded with.
  """
  onsets, ends, pitches = frames_to_notes(frames, steps_per_quarter=steps_per_quarter,
                                          duration_mode=duration_mode)
  layout = frame_layout(frames)
  if layout.metre and len(frames):  # the first frame's place in its bar: leading silence
    lead = int(duration_steps(frames[0, layout.metre_columns.start], steps_per_quarter))
    onsets, ends = onsets + lead, ends + lead
  to_ticks = lambda steps: np.rint(steps * ticks_per_beat / steps_per_quarter).astype(np.int64)
  velocities = velocity
  if has_velocity(frames):
    played = np.rint(note_velocities(frames)).astype(np.int64)
    velocities = np.where(played > 0, np.clip(played, 1, 127), velocity)
  return midi_lib.write_notes(to_ticks(onsets), to_ticks(ends), pitches, velocity=velocities,
                              ticks_per_beat=ticks_per_beat, tempo_bpm=tempo_bpm,
                              time_signature=time_signature)
