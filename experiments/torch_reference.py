"""A PyTorch reference of the four models, trained and sampled the usual way.

This is what a user would write without this library: the same models at the same
sizes (hidden 64, 2 layers by default), the same data shapes (frames [B, T, 107],
duration in quarter notes at index 106, read by the model as log1p), the same loss
(sum over the 106 notes of BCE-with-logits plus the categorical duration
cross-entropy over 96 classes, mean over predicted frames), trained with the usual
eager loop (AdamW, global-norm clipping) and sampled with the usual Python loop that
calls the model once per generated frame:

  - rnn / lstm: carry the hidden state, feed one frame per call;
  - transformer: recompute over the last `seq_len` frames every frame (no KV cache);
  - bilstm: rerun over the last `seq_len` frames every frame.

It is not a library module; experiments/benchmark.py imports it to time against
the JAX implementation. Run it alone as a smoke test (a few seconds on a CPU):

    python -m experiments.torch_reference

Needs PyTorch (`pip install torch`); the benchmark skips it when torch is missing.
"""

import math
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

NUM_NOTES = 106
FRAME_DIM = 107
DURATION_INDEX = 106
STEPS_PER_QUARTER = 12
DURATION_CLASSES = 96
MLP_RATIO = 4


def input_features(frames: torch.Tensor) -> torch.Tensor:
  """[..., 107] raw frames -> notes unchanged, duration as log1p(quarters)."""
  notes = frames[..., :NUM_NOTES]
  duration = torch.log1p(frames[..., DURATION_INDEX:].clamp_min(0.0))
  return torch.cat([notes, duration], dim=-1)


def duration_class(duration: torch.Tensor) -> torch.Tensor:
  """Quarters -> class k meaning (k + 1) / 12 quarters, clipped to 0..95."""
  steps = torch.round(duration * STEPS_PER_QUARTER).clamp(1, DURATION_CLASSES)
  return steps.long() - 1


class Heads(nn.Module):

  def __init__(self, hidden: int):
    super().__init__()
    self.notes = nn.Linear(hidden, NUM_NOTES)
    self.duration = nn.Linear(hidden, DURATION_CLASSES)

  def forward(self, h):
    return self.notes(h), self.duration(h)


class RecurrentModel(nn.Module):
  """nn.RNN / nn.LSTM stack, then the heads; output t predicts frame t + 1."""

  def __init__(self, kind: str, hidden: int, layers: int):
    super().__init__()
    rnn_cls = nn.LSTM if kind == "lstm" else nn.RNN
    self.rnn = rnn_cls(FRAME_DIM, hidden, num_layers=layers, batch_first=True)
    self.heads = Heads(hidden)

  def forward(self, frames, state=None):
    out, state = self.rnn(input_features(frames), state)
    return self.heads(out), state


class BiLSTMModel(nn.Module):
  """A bidirectional LSTM over a window; predicts the frame after it."""

  def __init__(self, hidden: int, layers: int):
    super().__init__()
    self.rnn = nn.LSTM(FRAME_DIM, hidden, num_layers=layers, batch_first=True,
                       bidirectional=True)
    self.heads = Heads(2 * hidden)

  def forward(self, frames):
    _, (h_n, _) = self.rnn(input_features(frames))
    summary = torch.cat([h_n[-2], h_n[-1]], dim=-1)  # last layer: forward, backward
    notes, duration = self.heads(summary)
    return notes[:, None], duration[:, None]


class PositionalEncoding(nn.Module):
  """The sinusoidal table of "Attention is all you need", added to the embeddings."""

  def __init__(self, hidden: int, max_len: int = 8192):
    super().__init__()
    position = torch.arange(max_len)[:, None]
    div = torch.exp(torch.arange(0, hidden, 2) * (-math.log(10000.0) / hidden))
    table = torch.zeros(max_len, hidden)
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div)
    self.register_buffer("table", table)

  def forward(self, x):
    return x + self.table[:x.shape[1]]


class TransformerModel(nn.Module):
  """Linear embedding, sinusoidal positions, pre-norm causal encoder layers, heads."""

  def __init__(self, hidden: int, layers: int, heads: int):
    super().__init__()
    self.embed = nn.Linear(FRAME_DIM, hidden)
    self.positions = PositionalEncoding(hidden)
    layer = nn.TransformerEncoderLayer(hidden, heads, MLP_RATIO * hidden, dropout=0.0,
                                       activation="gelu", batch_first=True, norm_first=True)
    self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
    self.norm = nn.LayerNorm(hidden)
    self.heads = Heads(hidden)

  def forward(self, frames):
    x = self.positions(self.embed(input_features(frames)))
    mask = nn.Transformer.generate_square_subsequent_mask(x.shape[1], device=x.device)
    x = self.encoder(x, mask=mask, is_causal=True)
    return self.heads(self.norm(x))


def build(model: str, hidden: int = 64, layers: int = 2, heads: int = 4) -> nn.Module:
  if model in ("rnn", "lstm"):
    return RecurrentModel(model, hidden, layers)
  if model == "bilstm":
    return BiLSTMModel(hidden, layers)
  if model == "transformer":
    return TransformerModel(hidden, layers, heads)
  raise ValueError(f"unknown model {model!r}")


def predict(model_name: str, model: nn.Module, inputs: torch.Tensor):
  """(note logits, duration logits) for every predicted frame of `inputs`."""
  if model_name in ("rnn", "lstm"):
    return model(inputs)[0]
  return model(inputs)


def loss_fn(model_name: str, model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
  """batch [B, T + 1, 107] windows -> mean NLL (nats) per predicted frame."""
  inputs = batch[:, :-1]
  targets = batch[:, 1:] if model_name != "bilstm" else batch[:, -1:]
  note_logits, duration_logits = predict(model_name, model, inputs)
  nll_notes = F.binary_cross_entropy_with_logits(
      note_logits, targets[..., :NUM_NOTES], reduction="none").sum(-1)
  nll_duration = F.cross_entropy(duration_logits.reshape(-1, DURATION_CLASSES),
                                 duration_class(targets[..., DURATION_INDEX]).reshape(-1),
                                 reduction="none")
  return (nll_notes.reshape(-1) + nll_duration).mean()


class Trainer:
  """The usual eager loop: forward, loss, backward, clip, AdamW step."""

  def __init__(self, model_name: str, hidden: int = 64, layers: int = 2, heads: int = 4,
               learning_rate: float = 3e-3, weight_decay: float = 1e-4, clip: float = 1.0,
               seed: int = 0, device: str = "cpu"):
    torch.manual_seed(seed)
    self.model_name = model_name
    self.model = build(model_name, hidden, layers, heads).to(device)
    self.model.train()
    self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=learning_rate,
                                       weight_decay=weight_decay)
    self.clip = clip

  def step(self, batch: torch.Tensor) -> float:
    self.optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(self.model_name, self.model, batch)
    loss.backward()
    nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
    self.optimizer.step()
    return loss.detach()  # a tensor: calling .item() every step would add a sync

  def num_params(self) -> int:
    return sum(p.numel() for p in self.model.parameters())


def sample_next(note_logits: torch.Tensor, duration_logits: torch.Tensor,
                temperature: float = 1.0) -> torch.Tensor:
  """[B, 106], [B, 96] logits -> a sampled frame [B, 107]."""
  notes = torch.bernoulli(torch.sigmoid(note_logits / temperature))
  k = torch.multinomial(torch.softmax(duration_logits / temperature, -1), 1)[:, 0]
  quarters = (k + 1).float() / STEPS_PER_QUARTER
  return torch.cat([notes, quarters[:, None]], dim=-1)


@torch.inference_mode()
def generate(model_name: str, model: nn.Module, prime: torch.Tensor, num_frames: int,
             window: int, temperature: float = 1.0) -> torch.Tensor:
  """The usual per-frame loop. prime [B, P, 107] -> [B, P + num_frames, 107]."""
  model.eval()
  frames = [prime[:, i] for i in range(prime.shape[1])]
  if model_name in ("rnn", "lstm"):
    (note_logits, duration_logits), state = model(prime)
    note_logits, duration_logits = note_logits[:, -1], duration_logits[:, -1]
    for _ in range(num_frames):
      frame = sample_next(note_logits, duration_logits, temperature)
      frames.append(frame)
      (note_logits, duration_logits), state = model(frame[:, None], state)
      note_logits, duration_logits = note_logits[:, -1], duration_logits[:, -1]
  else:
    for _ in range(num_frames):
      context = torch.stack(frames[-window:], dim=1)
      note_logits, duration_logits = model(context)
      frames.append(sample_next(note_logits[:, -1], duration_logits[:, -1], temperature))
  return torch.stack(frames, dim=1)


def random_frames(batch: int, time_steps: int, seed: int = 0) -> np.ndarray:
  """Synthetic frames: ~4 notes of 106 per frame, durations on the 1/12 grid."""
  rng = np.random.default_rng(seed)
  frames = np.zeros((batch, time_steps, FRAME_DIM), np.float32)
  frames[..., :NUM_NOTES] = rng.random((batch, time_steps, NUM_NOTES)) < 4 / NUM_NOTES
  frames[..., DURATION_INDEX] = rng.integers(1, 25, (batch, time_steps)) / STEPS_PER_QUARTER
  return frames


def _smoke():
  torch.set_num_threads(max(1, torch.get_num_threads()))
  for name in ("rnn", "lstm", "bilstm", "transformer"):
    trainer = Trainer(name)
    batch = torch.from_numpy(random_frames(8, 25))
    start = time.perf_counter()
    losses = [float(trainer.step(batch)) for _ in range(3)]
    frames = generate(name, trainer.model, batch[:2, :10], 16, window=24)
    print(f"{name}: {trainer.num_params()} params, losses {np.round(losses, 3)}, "
          f"sampled {tuple(frames.shape)} in {time.perf_counter() - start:.2f}s")


if __name__ == "__main__":
  _smoke()
