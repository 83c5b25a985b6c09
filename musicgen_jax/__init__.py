"""musicgen-jax: symbolic music generation with JAX and Flax.

The frame codec (the study's 107-dim frame and its parts) is re-exported here; models,
training, sampling and evaluation live in their own modules (`musicgen_jax.<name>`).
"""

from musicgen_jax.encoding import (
    DURATION_INDEX,
    FRAME_DIM,
    LOWEST_PITCH,
    NUM_NOTES,
    EncodeStats,
    encode_midi,
    frames_to_midi,
    midi_to_frames,
)
from musicgen_jax.midi import MidiError

__version__ = "0.1.0"

__all__ = [
    "DURATION_INDEX",
    "FRAME_DIM",
    "LOWEST_PITCH",
    "NUM_NOTES",
    "EncodeStats",
    "MidiError",
    "encode_midi",
    "frames_to_midi",
    "midi_to_frames",
]
