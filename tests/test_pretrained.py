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
from musicgen_jax.encoding import frame_layout, frames_to_midi, midi_to_frames
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
  by_path = pretrained.load(str(models / "toy"))  # a model folder by its path: the same model
  assert by_path.config == run.config and pretrained.info(str(models / "toy")) == described
  jax.tree.map(np.testing.assert_array_equal, by_path.params, run.params)
  with pytest.raises(ValueError, match="path of a model folder"):
    pretrained.load(str(models / "nothing"))
  with np.load(os.path.join(models, "toy", "params.npz"), allow_pickle=False) as z:
    assert all(z[k].dtype == np.float32 for k in z.files)  # plain arrays, never pickle


def test_export_can_ship_the_first_frames_of_a_prime(exported, tmp_path):
  workdir, models = exported
  source = str(tmp_path / "long.mid")
  frames_to_midi(toy_frames(3, 20)).save(source)
  config = workdir_lib.load_run(workdir).config
  pretrained.write_prime(config, source, 6, str(tmp_path / "prime.mid"))
  shipped = generate.load_prime(config, generate.GenerateConfig(
      prime_midi=str(tmp_path / "prime.mid"), prime_frames=6)).frames
  whole = generate.load_prime(config, generate.GenerateConfig(prime_midi=source,
                                                              prime_frames=20)).frames
  assert len(midi_to_frames(str(tmp_path / "prime.mid"))) == 6
  np.testing.assert_array_equal(shipped, whole[:6])


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


def test_the_judges_choice_ships_in_info_and_is_the_sampling_default(exported, tmp_path,
                                                                      monkeypatch):
  workdir, _ = exported
  copy = tmp_path / "w"
  import shutil  # pylint: disable=g-import-not-at-top
  shutil.copytree(workdir, copy)
  curve = [{"temperature": t, "top_p": 1.0, "balanced_accuracy": a, "spread": 0.01}
           for t, a in ((0.7, 0.6), (1.0, 0.8))]
  (copy / "sampling.json").write_text(json.dumps(dict(
      split="valid", length=12, temperature=0.7, top_p=1.0, balanced_accuracy=0.6,
      spread=0.01, floor=0.55, floor_spread=0.02, curve=curve)))
  (copy / "judge.json").write_text(json.dumps({
      "reference": "the test split", "above_floor": 0.1,
      "generated": {"balanced_accuracy": 0.7, "spread": 0.02, "giveaways": []},
      "floor": {"balanced_accuracy": 0.6, "spread": 0.03}}))
  monkeypatch.setattr("musicgen_jax.data.load_dataset", lambda cfg: toy_dataset())
  prime = str(tmp_path / "prime.mid")
  frames_to_midi(toy_frames(9, 12)).save(prime)
  folder = pretrained.export(str(copy), "chosen", prime, {"description": "d", "source": "s",
                                                          "licence": "l"},
                             models_dir=str(tmp_path / "models"))
  described = pretrained.info(folder)
  assert described["sampling"]["temperature"] == 0.7 and described["sampling"]["curve"] == curve
  assert described["judge"]["balanced_accuracy"] == 0.7 and described["judge"]["floor"] == 0.6
  assert pretrained.sampling_defaults(folder) == {"temperature": 0.7, "top_p": 1.0}
  held_out_primes = pretrained._judge_summary(dict(  # pylint: disable=protected-access
      split="test", samples_per_prime=4, balanced_accuracy=0.65, spread=0.02, floor=0.6,
      floor_spread=0.03, temperature=0.7, top_p=1.0, curve=[]))  # choose_sampling's output
  assert held_out_primes["above_floor"] == pytest.approx(0.05)
  assert held_out_primes["reference"].startswith("the test split, each piece priming 4")
  # what reaches the sampler (stopped there: compiling it adds nothing to this test)
  monkeypatch.setattr(generate, "_sample", lambda config, load, out, settings, *a: settings)
  options = dict(num_frames=4, num_samples=1, prime_frames=5, plot=False, audio="none")
  chosen = generate.sample_pretrained(folder, str(tmp_path / "a"), **options)
  given = generate.sample_pretrained(folder, str(tmp_path / "b"), temperature=1.0, **options)
  assert (chosen.temperature, given.temperature) == (0.7, 1.0)


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
  layout = frame_layout(result.frames, dims="batch, T")
  prime = generate.load_prime(run.config, generate.GenerateConfig(
      prime_midi=pretrained.prime_path(name), prime_frames=10)).frames  # its own frame
  assert result.frames.shape == (2, 10 + 32, layout.width) and prime.shape[1] == layout.width
  assert layout.lengths and layout.metre  # the shipped models hold notes and read the metre
  exact = np.ones(layout.width, bool)
  if layout.velocity:  # the piano model plays velocities: the prime's stay within a bin
    exact[layout.velocity_index] = False
    bin_width = 127 / run.config.model.velocity_bins
    played = result.frames[:, :10, layout.velocity_index]
    assert np.abs(played - prime[:, layout.velocity_index]).max() <= bin_width
    assert result.frames[:, 10:, layout.velocity_index].max() > 0
  np.testing.assert_array_equal(result.frames[:, :10, exact],
                                np.broadcast_to(prime[:, exact], (2, 10, exact.sum())))
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
