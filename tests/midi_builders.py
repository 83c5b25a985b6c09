"""Builds small MIDI files with mido for tests, from events in absolute ticks."""

import io

import mido


def build_midi(tracks, *, ticks_per_beat=480, midi_type=None, tempos=()):
  """Returns the bytes of a MIDI file.

  Args:
    tracks: a list of tracks, each a list of (tick, kind, channel, note,
      velocity) with kind "on", "off" or "pedal" (controller 64 set to `velocity`; note
      unused), in any order (sorted stably by tick).
    ticks_per_beat: the file's resolution.
    midi_type: 0 or 1; defaults to 0 for one track, 1 otherwise.
    tempos: (tick, bpm) tempo changes, written to the first track.
  """
  midi = mido.MidiFile(type=midi_type if midi_type is not None else int(len(tracks) > 1),
                       ticks_per_beat=ticks_per_beat)
  for index, events in enumerate(tracks):
    timeline = [(tick, 0, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm)))
                for tick, bpm in (tempos if index == 0 else ())]
    for tick, kind, channel, note, velocity in events:
      if kind == "pedal":  # the sustain pedal: `velocity` is the controller's value
        timeline.append((tick, 1, mido.Message("control_change", channel=channel, control=64,
                                               value=velocity)))
        continue
      msg_type = "note_on" if kind == "on" else "note_off"
      timeline.append((tick, 1, mido.Message(msg_type, channel=channel, note=note,
                                             velocity=velocity)))
    timeline.sort(key=lambda item: (item[0], item[1]))
    track = mido.MidiTrack()
    now = 0
    for tick, _, msg in timeline:
      track.append(msg.copy(time=tick - now))
      now = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    midi.tracks.append(track)
  buffer = io.BytesIO()
  midi.save(file=buffer)
  return buffer.getvalue()


def notes(*specs, channel=0, velocity=80):
  """(start_tick, end_tick, pitch) triples -> on/off events for build_midi."""
  events = []
  for start, end, pitch in specs:
    events.append((start, "on", channel, pitch, velocity))
    events.append((end, "off", channel, pitch, 0))
  return events
