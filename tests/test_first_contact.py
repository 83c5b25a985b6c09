"""Reliability and first contact, round three: what a newcomer hits first.

Each test here failed on the code before its fix (see the closing note of that work).
"""

import dataclasses
import os
import subprocess
import sys

import pytest

from musicgen_jax import generate
from musicgen_jax import train as train_lib
from musicgen_jax.data import STUDY_FRAME, DataConfig
from toy import toy_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(module, *args, timeout=240):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                        timeout=timeout, env=env, cwd=ROOT)


# Failed commands leave nothing behind.


def test_sampling_with_a_missing_prime_creates_no_out_dir(tmp_path):
  out = tmp_path / "out2"
  with pytest.raises(FileNotFoundError, match="missing.mid does not exist"):
    generate.sample_pretrained("piano", str(out), prime_midi=str(tmp_path / "missing.mid"))
  assert not out.exists()


def test_training_on_a_missing_data_dir_creates_no_workdir(tmp_path):
  config = toy_config()
  config = dataclasses.replace(config, data=DataConfig(dataset="midi_dir",
                                                        data_dir="/nonexistent",
                                                        cache_dir=str(tmp_path / "cache"),
                                                        **STUDY_FRAME))
  with pytest.raises(FileNotFoundError, match="is not a folder"):
    train_lib.train_and_evaluate(config, str(tmp_path / "w"))
  assert not (tmp_path / "w").exists() and not (tmp_path / "cache").exists()


def test_the_train_command_with_a_missing_data_dir_writes_nothing(tmp_path):
  proc = _run("musicgen_jax.train", "--dataset=midi_dir", "--data_dir=/nonexistent",
              f"--workdir={tmp_path / 'w'}", f"--cache_dir={tmp_path / 'cache'}")
  assert proc.returncode == 1 and "is not a folder" in proc.stderr.splitlines()[-1]
  assert os.listdir(tmp_path) == []


def test_prepare_on_a_missing_data_dir_writes_nothing(tmp_path):
  proc = _run("musicgen_jax.prepare", "--dataset=midi_dir", "--data_dir=/nonexistent",
              f"--cache_dir={tmp_path / 'cache'}",
              f"--stats_json={tmp_path / 'stats' / 'stats.json'}")
  assert proc.returncode == 1
  assert os.listdir(tmp_path) == []


def test_an_unwritable_workdir_is_still_refused_before_any_data_is_read(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("x")
  with pytest.raises(ValueError, match="--workdir"):
    train_lib.train_and_evaluate(toy_config(), str(blocker / "w"))


# Two installs of one music21 version share the chorales' cache entry.


def _fake_install(monkeypatch, folder, originals, age_s):
  """music21's Bach corpus as if installed in `folder`: copies with new modification times."""
  import shutil  # pylint: disable=g-import-not-at-top
  import music21  # pylint: disable=g-import-not-at-top
  (folder / "bach").mkdir(parents=True)
  copies = []
  for path in originals:
    copy = folder / "bach" / os.path.basename(path)
    shutil.copyfile(path, copy)
    os.utime(copy, ns=(os.stat(path).st_mtime_ns - 10**9 * age_s,) * 2)
    copies.append(str(copy))
  monkeypatch.setattr(music21.corpus, "getComposer", lambda composer: list(copies))


def test_two_installs_of_music21_share_the_chorale_cache(monkeypatch, tmp_path):
  music21 = pytest.importorskip("music21")
  from musicgen_jax.data import load_dataset, sources  # pylint: disable=g-import-not-at-top
  originals = [str(p) for p in music21.corpus.getComposer("bach")
               if str(p).endswith(".mxl")][:3]
  cfg = DataConfig(dataset="bach_chorales", cache_dir=str(tmp_path / "cache"), num_workers=1)
  _fake_install(monkeypatch, tmp_path / "venv_a", originals, age_s=3600)
  first_files = sources.list_bach_chorales()
  first = load_dataset(cfg)
  _fake_install(monkeypatch, tmp_path / "venv_b", originals, age_s=60)
  assert [f.signature for f in sources.list_bach_chorales()] == [f.signature for f in first_files]
  second = load_dataset(cfg)
  assert not first.summary["cache_hit"] and second.summary["cache_hit"]
  assert second.summary["num_encoded"] == 0


# Listening: the page belongs to the package, and `sample` writes it.


def test_pages_check_without_a_browser_is_one_line(tmp_path):
  page = tmp_path / "index.html"
  page.write_text("<html><body></body></html>")
  env = dict(os.environ, JAX_PLATFORMS="cpu", PATH=str(tmp_path))
  proc = subprocess.run([sys.executable, "-m", "musicgen_jax.pages", "check", str(page)],
                        capture_output=True, text=True, timeout=120, env=env, cwd=str(tmp_path))
  assert proc.returncode == 1 and "Traceback" not in proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: no headless browser found")
  assert "apt-get install chromium" in lines[0]


def test_sample_writes_a_listening_page_and_says_where(tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  from musicgen_jax import pages  # pylint: disable=g-import-not-at-top
  out = tmp_path / "out"
  proc = _run("musicgen_jax.sample", "--pretrained=chorales", "--num_frames=16",
              "--num_samples=2", f"--out_dir={out}", "--audio=none")
  assert proc.returncode == 0, proc.stderr[-2000:]
  printed = json.loads(proc.stdout.strip().splitlines()[-1])
  assert printed["page"] == str(out / "index.html")
  page = (out / "index.html").read_text()
  assert page.count("sample_00") >= 2
  assert all((out / p).exists() for p in pages.referenced_files(page))
  assert "listen: open" in proc.stderr


# A normal run prints only what matters.


def test_a_normal_run_prints_no_noise_and_a_skipped_file_is_warned_about_once(tmp_path):
  from musicgen_jax import frames_to_midi  # pylint: disable=g-import-not-at-top
  from toy import toy_frames  # pylint: disable=g-import-not-at-top
  data = tmp_path / "midi"
  data.mkdir()
  for i in range(8):
    frames_to_midi(toy_frames(i, 30)).save(str(data / f"piece_{i}.mid"))
  (data / "broken.mid").write_bytes(b"not midi")
  common = [f"--workdir={tmp_path / 'w'}"]
  train = _run("musicgen_jax.train", *common, "--dataset=midi_dir", f"--data_dir={data}",
               f"--cache_dir={tmp_path / 'cache'}", "--num_workers=1", "--valid_fraction=0.3",
               "--test_fraction=0.3", "--hidden_size=8",
               "--num_layers=1", "--seq_len=8", "--batch_size=4", "--num_steps=6",
               "--log_every=3", "--eval_every=6", "--checkpoint_every=3",
               "--max_duration_steps=24", "--note_head=independent")
  assert train.returncode == 0, train.stderr[-2000:]
  sample = _run("musicgen_jax.sample", *common, "--num_frames=8", "--num_samples=1",
                f"--out_dir={tmp_path / 'out'}", "--audio=none", "--noplot")
  assert sample.returncode == 0, sample.stderr[-2000:]
  for proc in (train, sample):
    for noise in ("backend 'tpu'", "read only", "read_only", "did not provide metrics"):
      assert noise not in proc.stderr, noise
  assert sum("skipped broken.mid" in l for l in train.stderr.splitlines()) == 1
  assert "skipped broken.mid" not in sample.stderr  # the cache remembers; the count is logged
  assert "1 skipped" in sample.stderr


def test_usage_examples_keep_their_line_breaks():
  import ast  # pylint: disable=g-import-not-at-top
  import pathlib  # pylint: disable=g-import-not-at-top
  import re  # pylint: disable=g-import-not-at-top
  checked = 0
  for path in sorted(pathlib.Path(ROOT).glob("*/*.py")):
    if path.parts[-2] not in ("musicgen_jax", "experiments"):
      continue
    doc = ast.get_docstring(ast.parse(path.read_text()), clean=False) or ""
    if "python -m" in doc:
      checked += 1
      assert not re.search(r"\S {4,}--", doc), f"{path.name}: a usage line lost its break"
  assert checked >= 8
  proc = _run("musicgen_jax.train", "--help")
  assert "--dataset=bach_chorales \\\n" in proc.stdout


def test_the_default_note_head_is_nade_and_old_runs_keep_theirs():
  import json  # pylint: disable=g-import-not-at-top
  import pathlib  # pylint: disable=g-import-not-at-top
  from musicgen_jax.config import RunConfig  # pylint: disable=g-import-not-at-top
  from musicgen_jax.models import ModelConfig  # pylint: disable=g-import-not-at-top
  assert ModelConfig().note_head == "nade"
  legacy = pathlib.Path(__file__).parent / "fixtures" / "legacy_lstm"
  assert "note_head" not in json.loads((legacy / "config.json").read_text())["model"]
  assert RunConfig.load(str(legacy)).model.note_head == "independent"
  study = sorted(pathlib.Path(ROOT, "experiments", "study").glob("*.flags"))
  assert study and all("--note_head=independent\n" in f.read_text() for f in study)
