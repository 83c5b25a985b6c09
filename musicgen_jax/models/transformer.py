"""A causal Transformer over frames with a sliding attention window of cfg.seq_len.

Frames are embedded by a Dense, positions enter through rotary embeddings (RoPE)
applied to queries and keys, so attention depends only on relative offsets. In
every layer each position attends to the last cfg.seq_len positions including
itself (a banded causal mask), on sequences of any length; long sequences are
attended block by block, so memory grows linearly with length. Decoding keeps a
ring buffer of cfg.seq_len keys/values per layer that reproduces the one-call
outputs exactly at any absolute position.

Context, one definition for training, evaluation and sampling: every layer attends to
the last seq_len positions (sliding-window attention), so output t depends on frames
t - L * (seq_len - 1) .. t with L layers: a finite receptive field. Evaluation runs
a piece in chunks that each start that far back, training windows are longer than the
band (so deeper layers learn the reach they have), and the decoding cache reproduces the
one-call outputs exactly at any position."""

from typing import ClassVar

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from musicgen_jax.models.config import ModelConfig
from musicgen_jax.models.distributions import FrameDistribution
from musicgen_jax.models.heads import FrameHead, check_frames, compute_dtype, input_features
from musicgen_jax.models.protocol import FIELD, Context

ROPE_BASE = 10000.0  # RoPE frequency base, as in RoFormer
MLP_RATIO = 4  # feed-forward width / hidden size
_MASKED = -1e30  # score for masked keys (scores are float32)


def head_dim(cfg: ModelConfig) -> int:
  """Per-head width; checks the config suits RoPE attention."""
  if cfg.hidden_size % cfg.num_heads:
    raise ValueError(
        f"--hidden_size={cfg.hidden_size} must be divisible by --num_heads={cfg.num_heads}")
  size = cfg.hidden_size // cfg.num_heads
  if size % 2:
    raise ValueError(f"the head size --hidden_size / --num_heads = {size} must be even for "
                     "rotary positions")
  return size


def apply_rope(x: jax.Array, positions: jax.Array) -> jax.Array:
  """Rotates feature pairs of queries or keys by angles proportional to position.

  Args:
    x: float[batch, time, heads, head_dim], head_dim even.
    positions: int32[time] absolute positions.

  Returns:
    float[batch, time, heads, head_dim] in x's dtype (computed in float32).
  """
  half = x.shape[-1] // 2
  inv_freq = ROPE_BASE ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angles = positions.astype(jnp.float32)[:, None] * inv_freq[None, :]  # [time, half]
  sin = jnp.sin(angles)[None, :, None, :]
  cos = jnp.cos(angles)[None, :, None, :]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return rotated.astype(x.dtype)


def _attention_weights(q: jax.Array, k: jax.Array, mask: jax.Array) -> jax.Array:
  """Softmax attention weights from float32 scores.

  Args:
    q: float[..., q_len, heads, d]; k: float[..., k_len, heads, d].
    mask: bool broadcastable to [..., heads, q_len, k_len]; True = may attend.

  Returns:
    float32[..., heads, q_len, k_len], each row summing to 1 over visible keys.
  """
  scale = q.shape[-1] ** -0.5
  scores = jnp.einsum("...qhd,...khd->...hqk", q, k, preferred_element_type=jnp.float32)
  scores = jnp.where(mask, scores * scale, _MASKED)
  return jax.nn.softmax(scores, axis=-1)


def banded_causal_mask(q_positions: jax.Array, k_positions: jax.Array,
                       window: int) -> jax.Array:
  """bool[q, k]: key j is visible to query i iff 0 <= pos_i - pos_j < window."""
  offset = q_positions[:, None] - k_positions[None, :]
  return (offset >= 0) & (offset < window)


class SelfAttention(nn.Module):
  """Multi-head self-attention with RoPE and a banded causal mask.

  Attributes:
    cfg: model config (hidden size, heads, seq_len as the window, dropout, dtype).
  """

  cfg: ModelConfig

  def setup(self):
    cfg = self.cfg
    dtype = compute_dtype(cfg)
    features = (cfg.num_heads, head_dim(cfg))
    self.query = nn.DenseGeneral(features, dtype=dtype)
    self.key = nn.DenseGeneral(features, dtype=dtype)
    self.value = nn.DenseGeneral(features, dtype=dtype)
    self.out = nn.DenseGeneral(cfg.hidden_size, axis=(-2, -1), dtype=dtype)
    self.weight_dropout = nn.Dropout(rate=cfg.dropout)

  def _qkv(self, x, positions):
    q = apply_rope(self.query(x), positions)
    k = apply_rope(self.key(x), positions)
    return q, k, self.value(x)

  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    """Attends over a whole sequence.

    Args:
      x: float[batch, time, hidden] at absolute positions 0..time-1.
      train: enables attention-weight dropout.

    Returns:
      float[batch, time, hidden].
    """
    window = self.cfg.seq_len
    batch, time, _ = x.shape
    q, k, v = self._qkv(x, jnp.arange(time))
    if time <= window:
      positions = jnp.arange(time)
      weights = _attention_weights(q, k, banded_causal_mask(positions, positions, window))
      weights = self.weight_dropout(weights, deterministic=not train)
      mixed = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(v.dtype), v)
    else:
      # Blocks of `window` queries attend to their own block and the one before:
      # memory grows linearly with time, results equal the dense banded mask.
      blocks = -(-time // window)
      pad = blocks * window - time

      def to_blocks(a):
        a = jnp.pad(a, ((0, 0), (0, pad), (0, 0), (0, 0)))
        return a.reshape(batch, blocks, window, *a.shape[2:])

      qb, kb, vb = to_blocks(q), to_blocks(k), to_blocks(v)
      previous = lambda a: jnp.pad(a, ((0, 0), (1, 0), (0, 0), (0, 0), (0, 0)))[:, :-1]
      keys = jnp.concatenate([previous(kb), kb], axis=2)  # [b, blocks, 2 * window, h, d]
      values = jnp.concatenate([previous(vb), vb], axis=2)
      # Within a block, query i sits at offset window + i from the previous
      # block's start; key j at offset j. Keys before position 0 are masked.
      local = banded_causal_mask(jnp.arange(window) + window, jnp.arange(2 * window), window)
      after_start = (jnp.arange(blocks)[:, None, None] > 0) | (jnp.arange(2 * window) >= window)
      mask = local[None] & after_start  # [blocks, window, 2 * window]
      weights = _attention_weights(qb, keys, mask[None, :, None])
      weights = self.weight_dropout(weights, deterministic=not train)
      mixed = jnp.einsum("bnhqk,bnkhd->bnqhd", weights.astype(values.dtype), values)
      mixed = mixed.reshape(batch, blocks * window, *mixed.shape[3:])[:, :time]
    return self.out(mixed)

  def decode(self, x: jax.Array, keys: jax.Array, values: jax.Array, layer: int,
             position: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Attends from one new position through a ring buffer of the last seq_len keys.

    Args:
      x: float[batch, 1, hidden] at absolute position `position`.
      keys, values: float[layers, batch, seq_len, heads, head_dim], every layer's
        cache; slot s of this `layer` holds the most recent position p < `position`
        with p % seq_len == s (RoPE applied). Only this layer's new slot is written,
        in place: the cache is never copied per frame.
      layer: this block's index.
      position: int32[] the new frame's absolute position.

    Returns:
      float[batch, 1, hidden] and the updated keys and values (all layers).
    """
    window = self.cfg.seq_len
    q, k, v = self._qkv(x, position[None])
    slot = position % window
    at = (layer, 0, slot, 0, 0)
    keys = jax.lax.dynamic_update_slice(keys, k[None].astype(keys.dtype), at)
    values = jax.lax.dynamic_update_slice(values, v[None].astype(values.dtype), at)
    # Slots not yet written (only while position < seq_len - 1) are masked.
    valid = jnp.arange(window) <= position
    weights = _attention_weights(q, keys[layer], valid[None, None, None, :])
    mixed = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(values.dtype), values[layer])
    return self.out(mixed), keys, values


class Block(nn.Module):
  """Pre-norm residual block: x + attention(norm(x)), then x + mlp(norm(x)).

  Attributes:
    cfg: model config.
  """

  cfg: ModelConfig

  def setup(self):
    cfg = self.cfg
    dtype = compute_dtype(cfg)
    self.attention_norm = nn.LayerNorm(dtype=dtype)
    self.attention = SelfAttention(cfg)
    self.mlp_norm = nn.LayerNorm(dtype=dtype)
    self.mlp_in = nn.Dense(MLP_RATIO * cfg.hidden_size, dtype=dtype)
    self.mlp_out = nn.Dense(cfg.hidden_size, dtype=dtype)
    self.dropout = nn.Dropout(rate=cfg.dropout)

  def _mlp(self, x, train):
    h = nn.gelu(self.mlp_in(self.mlp_norm(x)))
    return self.dropout(self.mlp_out(h), deterministic=not train)

  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    """float[batch, time, hidden] -> float[batch, time, hidden]."""
    h = self.attention(self.attention_norm(x), train=train)
    x = x + self.dropout(h, deterministic=not train)
    return x + self._mlp(x, train)

  def decode(self, x, keys, values, layer, position):
    """One position: float[batch, 1, hidden] -> same, with this layer's cache slot written."""
    h, keys, values = self.attention.decode(self.attention_norm(x), keys, values, layer,
                                            position)
    x = x + h
    return x + self._mlp(x, False), keys, values


@flax.struct.dataclass
class KVCache:
  """The Transformer's decoding state; its size never depends on output length.

  keys, values: float[num_layers, batch, seq_len, heads, head_dim] ring buffers
    (compute dtype), keys with RoPE applied at their absolute positions.
  position: int32[] absolute position of the next frame to be fed.
  """

  keys: jax.Array
  values: jax.Array
  position: jax.Array


def empty_cache(cfg: ModelConfig, batch_size: int) -> KVCache:
  """A cache before any frame has been fed."""
  shape = (cfg.num_layers, batch_size, cfg.seq_len, cfg.num_heads, head_dim(cfg))
  dtype = compute_dtype(cfg)
  return KVCache(keys=jnp.zeros(shape, dtype), values=jnp.zeros(shape, dtype),
                 position=jnp.zeros((), jnp.int32))


class Transformer(nn.Module):
  """Dense frame embedding, pre-norm causal RoPE blocks, final LayerNorm, heads.

  Output t predicts frame t + 1; each layer attends to its last seq_len positions
  (see the module docstring for the receptive field).

  Attributes:
    cfg: model config.
  """

  cfg: ModelConfig
  causal: ClassVar[bool] = True
  carries_state: ClassVar[bool] = False

  @staticmethod
  def check_config(cfg: ModelConfig) -> None:
    head_dim(cfg)

  @staticmethod
  def context(cfg: ModelConfig) -> Context:
    """Output t depends on frames t - num_layers * (seq_len - 1) .. t."""
    return Context(FIELD, cfg.num_layers * (cfg.seq_len - 1) + 1)

  @staticmethod
  def train_window(cfg: ModelConfig) -> int:
    """Longer than the band: deeper layers train on the reach they have when sampling."""
    return cfg.num_layers * cfg.seq_len

  @staticmethod
  def init_carry(cfg: ModelConfig, batch_size: int) -> "KVCache":
    return empty_cache(cfg, batch_size)

  def setup(self):
    cfg = self.cfg
    dtype = compute_dtype(cfg)
    head_dim(cfg)  # validates the config early
    self.embed = nn.Dense(cfg.hidden_size, dtype=dtype)
    self.embed_dropout = nn.Dropout(rate=cfg.dropout)
    self.blocks = [Block(cfg) for _ in range(cfg.num_layers)]
    self.final_norm = nn.LayerNorm(dtype=dtype)
    self.heads = FrameHead(cfg)

  def __call__(self,
               frames: jax.Array,
               *,
               train: bool = False,
               lengths: jax.Array | None = None) -> FrameDistribution:
    """Predicts every next frame of a sequence of any length.

    Args:
      frames: float32[batch, time, 107] raw frames.
      train: enables dropout (needs the 'dropout' rng).
      lengths: ignored (causal: right padding cannot reach valid positions).

    Returns:
      FrameDistribution with fields [batch, time, ...].
    """
    del lengths
    check_frames(frames, self.cfg)
    features = input_features(frames, self.cfg.steps_per_quarter)
    x = self.embed(features.astype(compute_dtype(self.cfg)))
    x = self.embed_dropout(x, deterministic=not train)
    for block in self.blocks:
      x = block(x, train=train)
    return self.heads(self.final_norm(x))

  def decode(self, frame: jax.Array, cache: KVCache) -> tuple[FrameDistribution, KVCache]:
    """Feeds one frame at position cache.position.

    Args:
      frame: float32[batch, 107].
      cache: see KVCache.

    Returns:
      FrameDistribution with fields [batch, ...] (the next frame) and the updated cache.
    """
    features = input_features(frame[:, None, :], self.cfg.steps_per_quarter)
    x = self.embed(features.astype(compute_dtype(self.cfg)))
    keys, values = cache.keys, cache.values
    for layer, block in enumerate(self.blocks):
      x, keys, values = block.decode(x, keys, values, layer, cache.position)
    prediction = self.heads(self.final_norm(x[:, 0]))
    cache = KVCache(keys=keys, values=values, position=cache.position + 1)
    return prediction, cache
