"""Models: four backbones (rnn, lstm, bilstm, transformer) and their heads, one registry.

    cfg = ModelConfig(model="lstm", note_head="nade")
    params = init_params(cfg, jax.random.key(0))
    prediction = apply_model(cfg, params, frames)   # a FrameDistribution
    nll = prediction.duration.nll(next_durations)
"""

from musicgen_jax.models.config import DURATION_HEADS, MODELS, NOTE_HEADS, ModelConfig
from musicgen_jax.models.distributions import (CategoricalDuration, CategoricalVelocity,
                                               FrameDistribution, IndependentNotes,
                                               LogNormalDuration, NadeNotes, Prediction)
from musicgen_jax.models.protocol import FIELD, STATE, WINDOW, Context, FrameWindow
from musicgen_jax.models.registry import (apply_model, build_model, carries_state,
                                          check_config, context, decode_step,
                                          default_train_window, init_carry,
                                          init_params, is_causal)
from musicgen_jax.models.transformer import KVCache

__all__ = [
    "DURATION_HEADS", "FIELD", "MODELS", "NOTE_HEADS", "STATE", "WINDOW",
    "CategoricalDuration", "CategoricalVelocity", "Context", "FrameDistribution", "FrameWindow", "IndependentNotes",
    "KVCache", "LogNormalDuration", "ModelConfig", "NadeNotes", "Prediction", "apply_model",
    "build_model", "carries_state", "check_config", "context", "decode_step",
    "default_train_window", "init_carry",
    "init_params", "is_causal",
]
