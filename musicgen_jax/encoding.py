"""The 107-dim frame: constants, notes <-> frames, frames <-> MIDI.

(Implementation in progress.)
"""

NUM_NOTES = 106  # pitches 21 (A0) .. 126
LOWEST_PITCH = 21  # A0
FRAME_DIM = NUM_NOTES + 1  # 106 note onsets + duration in quarter notes
DURATION_INDEX = NUM_NOTES  # frame[DURATION_INDEX] is the duration
