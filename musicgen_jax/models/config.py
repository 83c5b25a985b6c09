"""ModelConfig: everything needed to rebuild a model; saved in `W/config.json`."""

from __future__ import annotations

import dataclasses

from musicgen_jax.settings import (FREE, Settings, at_least, in_range, non_negative, positive,
                                   setting)

MODELS = ("rnn", "lstm", "bilstm", "transformer")  # the registry maps each to its module
NOTE_HEADS = ("independent", "nade")
DURATION_HEADS = ("categorical", "regression")
DTYPES = ("float32", "bfloat16", "float16")
RNN_IMPLS = ("auto", "scan", "cudnn")  # models.cudnn.IMPLS
LSTM_MODELS = ("lstm", "bilstm")  # the models of LSTM cells, which cuDNN can run


@dataclasses.dataclass(frozen=True)
class ModelConfig(Settings):
  """The architecture and its heads. Hashable: one compiled program per config."""

  model: str = setting(
      "lstm", "Architecture: Elman RNN, LSTM, bidirectional LSTM or causal Transformer.",
      choices=MODELS)
  hidden_size: int = setting(64, "Hidden units (model width); the study's 64.", check=positive)
  num_layers: int = setting(2, "Stacked recurrent layers or Transformer blocks; the study's 2.",
                            check=positive)
  num_heads: int = setting(4, "Attention heads (transformer).", check=positive)
  dropout: float = setting(0.0, "Dropout rate during training.",
                           check=in_range(0.0, 1.0, high_open=True))
  dtype: str = setting("float32", "Compute dtype (parameters stay float32); bfloat16 for "
                       "accelerators.", choices=DTYPES)
  rnn_impl: str = setting(
      "auto", "The LSTM loop: 'scan' (lax.scan with a hand-written backward pass, every "
      "backend), 'cudnn' (cuDNN's fused LSTM, GPUs, float32), or 'auto' (cudnn for the lstm "
      "and bilstm in float32 on a GPU, scan elsewhere). The weights are the same either way.",
      choices=RNN_IMPLS, resume=FREE)
  note_head: str = setting(
      "nade", "Note output: 'nade', pitch by pitch from the lowest, each given the pitches "
      "below it (as RNN-NADE; the better likelihood and music), or 'independent' Bernoulli "
      "per pitch (the study's).", choices=NOTE_HEADS,
      stored_default="independent")  # runs from before the nade head had only the study's
  nade_hidden: int = setting(100, "Hidden units of the nade note head.", check=positive)
  duration_head: str = setting(
      "categorical", "Duration output: classes of grid steps, or the study's scalar regression.",
      choices=DURATION_HEADS)
  max_duration_steps: int = setting(
      96, "Duration classes (grid steps); longer durations go to the last class.",
      check=positive)
  seq_len: int = setting(
      48, "Context in frames: the training window of recurrent models, the bidirectional "
      "LSTM's input length, and the Transformer's attention window in every layer.",
      check=at_least(2))
  # Copied from the data config by RunConfig (the frame's grid); never a flag of its own.
  steps_per_quarter: int = setting(12, "Duration grid of the frames (from --steps_per_quarter).",
                                   check=positive, flag=False)
  # From the data config too: frames carry velocity, predicted in this many classes (0 = off).
  velocity_bins: int = setting(0, "Velocity classes (from --velocity_bins).",
                               check=non_negative, flag=False)
  # From the data config: frames carry each note's length, predicted in max_length_steps
  # classes, and metre columns that the model reads (where each frame falls in its bar).
  note_lengths: bool = setting(False, "Frames carry note lengths (from --note_lengths).",
                               flag=False)
  metre: bool = setting(False, "Frames carry metre columns (from --metre).", flag=False)
  max_length_steps: int = setting(
      96, "Note length classes (grid steps) for frames with note lengths; longer notes go "
      "to the last class.", check=positive)
  # The MIDI pitches the model was trained on (the training data's range, widened by any
  # transposition); set when training starts, 0 = not recorded. Sampling keeps to them.
  pitch_low: int = setting(0, "Lowest trained pitch.", check=non_negative, flag=False)
  pitch_high: int = setting(0, "Highest trained pitch.", check=non_negative, flag=False)

