"""Models shipped in the package: they load into the current code, and sample at once."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from musicgen_jax import generate, pretrained, train
from musicgen_jax import workdir as workdir_lib
from musicgen_jax.encoding import FRAME_DIM, encode_midi, frames_to_midi, midi_to_frames
from toy import toy_config, toy_dataset, toy_frames

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = ("chorales", "piano")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """A toy run exported as a pretrained model into a temporary models folder."""
  root = tmp_path_factory.mktemp("pretrained")
  workdir = str(root / "w")
  dataset = toy_dataset()
  train.train_and_evaluate(toy_config(num_steps=2, checkpoint_every=2, eval_every=0),
                           workdir, dataset=dataset)
  prime = str(root / "prime.mid")
  frames_to_midi(toy_frames(9, 12)).save(prime)
  models = root / "models"
  with pytest.MonkeyPatch.context() as patch:  # the toy run has no dataset on disk
    patch.setattr("musicgen_jax.data.load_dataset", lambda cfg: dataset)  # what export reads
    pretrained.export(workdir, "toy", prime, {"description": "toy", "source": "tests",
                                              "licence": "none"}, models_dir=str(models))
  return workdir, models


def test_an_exported_model_loads_the_best_parameters(exported, monkeypatch):
  workdir, models = exported
  monkeypatch.setattr(pretrained, "MODELS_DIR", str(models))
  assert pretrained.names() == ["toy"]
  run, original = pretrained.load("toy"), workdir_lib.load_run(workdir)
  assert run.config == original.config and run.step == original.step
  jax.tree.map(np.testing.assert_array_equal, run.params, original.params)
  described = pretrained.info("toy")
  assert np.isfinite(described["test_nll"]) and described["size_bytes"] > 0
  with np.load(os.path.join(models, "toy", "params.npz"), allow_pickle=False) as z:
    assert all(z[k].dtype == np.float32 for k in z.files)  # plain arrays, never pickle


def test_a_changed_model_is_refused(exported, monkeypatch, tmp_path):
  _, models = exported
  config = json.load(open(models / "toy" / "config.json"))
  config["model"]["hidden_size"] += 1
  broken = tmp_path / "models" / "toy"
  broken.mkdir(parents=True)
  for name in pretrained.FILES:
    (broken / name).write_bytes((models / "toy" / name).read_bytes())
  json.dump(config, open(broken / "config.json", "w"))
  monkeypatch.setattr(pretrained, "MODELS_DIR", str(tmp_path / "models"))
  with pytest.raises(ValueError, match="does not fit"):
    pretrained.load("toy")


def test_the_shipped_models_are_there():
  assert set(SHIPPED) <= set(pretrained.names())


@pytest.mark.parametrize("name", SHIPPED)
def test_each_shipped_model_fits_the_code_and_samples(name, tmp_path):
  run = pretrained.load(name)  # raises if its arrays no longer fit the model code
  described = pretrained.info(name)
  assert described["size_bytes"] < 8 * 2**20 and np.isfinite(described["test_nll"])
  for key in ("description", "source", "licence"):
    assert described[key]
  result = generate.sample_pretrained(name, str(tmp_path), num_frames=32, num_samples=2,
                                      plot=False, audio="none")
  dynamics = run.config.model.velocity_bins > 0  # the piano model plays velocities
  prime, _ = encode_midi(pretrained.prime_path(name), with_velocity=dynamics)
  assert result.frames.shape == (2, 10 + 32, FRAME_DIM + dynamics)
  np.testing.assert_array_equal(result.frames[:, :10, :FRAME_DIM],
                                np.broadcast_to(prime[:10, :FRAME_DIM], (2, 10, FRAME_DIM)))
  if dynamics:  # the prime's velocities stay within a bin; the continuation has some
    bin_width = 127 / run.config.model.velocity_bins
    assert np.abs(result.frames[:, :10, FRAME_DIM] - prime[:10, FRAME_DIM]).max() <= bin_width
    assert result.frames[:, 10:, FRAME_DIM].max() > 0
  for path in result.midi_paths:
    assert len(midi_to_frames(path)) >= 10
  assert run.config.model.pitch_high > 0


def test_sample_program_lists_and_samples_a_shipped_model(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  listed = subprocess.run([sys.executable, "-m", "musicgen_jax.sample", "--pretrained=list"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
  assert listed.returncode == 0 and all(n in listed.stdout for n in SHIPPED)
  proc = subprocess.run([sys.executable, "-m", "musicgen_jax.sample", "--pretrained=chorales",
                         "--num_frames=16", "--num_samples=1", f"--out_dir={tmp_path}"],
                        capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert (tmp_path / "sample_000.mid").exists()
