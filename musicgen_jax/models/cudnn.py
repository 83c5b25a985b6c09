"""cuDNN's fused LSTM (forward and backward) behind `--rnn_impl`, in the model's own weights.

`jax.experimental.rnn.lstm` binds cuDNN's RNN: it takes one flat weight vector in cuDNN's
packing (per pseudo-layer, a direction of a layer: W_ih [4H, D] and W_hh [4H, H] with the
gates in the order i, f, g, o, then all the biases b_ih and b_hh). The LSTM layers here keep
Flax's layout (a [D, H] kernel per gate); `pack` converts them for the call, inside the
differentiated function, so gradients reach the model's own parameters and checkpoints,
evaluation and sampling are the same whichever loop trained them.

`jax.experimental.rnn.lstm_ref` is the same packed computation in plain JAX; on a machine
without a GPU the tests run it through `pack` to check the packing against the scan
(`KERNEL = "reference"`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.experimental import rnn

from musicgen_jax.models.config import LSTM_MODELS
from musicgen_jax.models.config import RNN_IMPLS as IMPLS

KERNEL = "cudnn"  # or "reference": lstm_ref over the same packed weights (tests on CPU)


def resolve(impl: str, model: str, dtype: str) -> str:
  """The loop a run uses: 'scan' or 'cudnn'. auto: cuDNN for the LSTMs in float32 on a GPU.

  Raises:
    ValueError: for 'cudnn' where it cannot run (no GPU, another cell, another dtype).
  """
  if impl not in IMPLS:
    raise ValueError(f"--rnn_impl must be one of {IMPLS}, got {impl!r}")
  lstm = model in LSTM_MODELS
  usable = lstm and dtype == "float32" and (jax.default_backend() == "gpu"
                                            or KERNEL == "reference")
  if impl == "cudnn" and not usable:
    why = (f"only the {' and '.join(LSTM_MODELS)} models have it" if not lstm else
           "its binding takes float32 only" if dtype != "float32" else
           f"it needs a GPU and this backend is {jax.default_backend()}")
    raise ValueError(f"--rnn_impl=cudnn: {why}; use --rnn_impl=auto or scan")
  return "cudnn" if impl == "cudnn" or (impl == "auto" and usable) else "scan"


def pack(layers) -> jax.Array:
  """[(w_i [D, 4H], w_h [H, 4H], bias [4H]), ...] per pseudo-layer -> cuDNN's flat weights.

  The model has one bias per gate; it goes to b_ih, and b_hh is zero.
  """
  matrices = [m for w_i, w_h, _ in layers for m in (w_i.T, w_h.T)]
  biases = [b for _, _, bias in layers for b in (bias, jnp.zeros_like(bias))]
  return jnp.concatenate([x.reshape(-1) for x in matrices + biases]).astype(jnp.float32)


def lstm(inputs, layers, carry, lengths, bidirectional: bool):
  """One LSTM layer (both directions when bidirectional) through cuDNN.

  Args:
    inputs: float32[time, batch, D], time major as the scan reads them.
    layers: the pseudo-layers' (w_i, w_h, bias): one, or (forward, backward).
    carry: (c, h), each float32[directions, batch, H].
    lengths: int32[batch] valid steps per row (the backward direction reads them reversed).
    bidirectional: whether `layers` holds both directions.

  Returns:
    (h [time, batch, directions * H], (c, h) after each row's last valid step).
  """
  size, hidden = inputs.shape[-1], layers[0][1].shape[0]
  weights = pack(layers)
  x = jnp.swapaxes(inputs, 0, 1).astype(jnp.float32)
  c0, h0 = carry
  if KERNEL == "reference":
    w_ih, w_hh, b_ih, b_hh = rnn.unpack_lstm_weights(weights, size, hidden, 1, bidirectional)
    y, h_n, c_n = rnn.lstm_ref(x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, size, hidden, 1,
                               0.0, bidirectional)
  else:
    y, h_n, c_n = rnn.lstm(x, h0, c0, weights, lengths, input_size=size, hidden_size=hidden,
                           num_layers=1, dropout=0.0, bidirectional=bidirectional)
  return jnp.swapaxes(y, 0, 1), (c_n, h_n)
