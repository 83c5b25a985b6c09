"""The studio: its functions directly, then the page end to end in headless Chromium."""

import io
import json
import os
import threading
import time
import urllib.request

import mido
import pytest

from experiments import studio_timing
from musicgen_jax import audio as audio_lib
from musicgen_jax import pretrained
from musicgen_jax.studio import core
from tests.toy import toy_config

MODEL = "shipped:chorales"
# The end-to-end test asks the page for the same shapes (its defaults), so the server's
# compile is found in the test session's persistent compilation cache.
FRAMES, SAMPLES = 256, 2


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
  return core.Studio(str(tmp_path_factory.mktemp("studio")), audio=None)


@pytest.fixture(scope="module")
def first_result(studio):
  return studio.generate(core.Request(model=MODEL, num_frames=FRAMES, num_samples=SAMPLES))


def _fake_workdir(folder, nll=None):
  os.makedirs(os.path.join(folder, "checkpoints", "6"))
  toy_config().save(folder)
  if nll is not None:
    with open(os.path.join(folder, "eval_test.json"), "w") as f:
      json.dump({"nll": nll}, f)


def test_models_lists_shipped_models_then_workdirs_with_their_numbers(tmp_path):
  _fake_workdir(str(tmp_path / "runs" / "a"), nll=5.25)
  _fake_workdir(str(tmp_path / "runs" / "deeper" / "b"))
  os.makedirs(tmp_path / "runs" / "not_a_run")
  entries = core.list_models(str(tmp_path / "runs"))
  shipped = [e for e in entries if e.kind == core.SHIPPED]
  assert [e.name for e in shipped] == pretrained.names()
  for entry in shipped:
    info = pretrained.info(entry.name)
    assert entry.test_nll == info["test_nll"]
    assert entry.judge["balanced_accuracy"] == info["judge"]["balanced_accuracy"]
    assert f"{info['test_nll']:.3f}" in entry.label and "judge" in entry.describe()
  chorales = next(e for e in shipped if e.name == "chorales")
  assert chorales.defaults["max_polyphony"] == 4  # its own sampling, chosen by the judge
  workdirs = [e for e in entries if e.kind == core.WORKDIR]
  assert [e.name for e in workdirs] == ["a", os.path.join("deeper", "b")]
  assert workdirs[0].test_nll == 5.25 and "5.250" in workdirs[0].label
  assert workdirs[1].test_nll is None and "not measured" in workdirs[1].describe()
  assert "lstm" in workdirs[0].describe()


def test_a_held_out_piece_primes_and_its_dataset_is_cached_inside_the_output_folder(tmp_path):
  from musicgen_jax.data import STUDY_FRAME, DataConfig  # pylint: disable=g-import-not-at-top
  from musicgen_jax.encoding import frames_to_midi  # pylint: disable=g-import-not-at-top
  from tests.toy import toy_frames  # pylint: disable=g-import-not-at-top
  music = tmp_path / "music"
  music.mkdir()
  for i in range(12):
    frames_to_midi(toy_frames(i, 24)).save(str(music / f"piece_{i:02d}.mid"))
  workdir = str(tmp_path / "runs" / "toy")
  _fake_workdir(workdir)
  config = toy_config()
  config = type(config)(model=config.model, train=config.train, data=DataConfig(
      dataset="midi_dir", data_dir=str(music), cache_dir=str(tmp_path / "gone"),
      valid_fraction=0.3, test_fraction=0.3, num_workers=1, **STUDY_FRAME))
  config.save(workdir)
  studio = core.Studio(str(tmp_path / "out"), runs_dir=str(tmp_path / "runs"), audio="none")
  key = next(e.key for e in studio.models() if e.kind == core.WORKDIR)
  pieces = studio.held_out_pieces(key)
  dataset = studio.dataset(studio.entry(key))
  assert len(pieces) == len(dataset["test"]) + len(dataset["valid"]) > 0
  assert os.listdir(tmp_path / "out" / "cache") and not os.path.exists(tmp_path / "gone")
  split, index = pieces[-1][1].split("/")
  request = core.Request(model=key, prime="held_out", held_out=pieces[-1][1], prime_frames=5)
  _, job = core.check_request(request, studio.entry(key))
  prime = studio._prime(studio.entry(key), request, job)  # pylint: disable=protected-access
  assert prime.source["piece_name"] == dataset[split][int(index)].name
  assert (prime.frames == dataset[split][int(index)].frames[:5]).all()


@pytest.mark.parametrize("change, says", [
    (dict(num_frames=0), "num_frames must be a whole number from 1"),
    (dict(num_frames=10**6, num_samples=10**6), "num_frames must be a whole number"),
    (dict(num_samples=core.MAX_SAMPLES + 1), "num_samples must be"),
    (dict(num_frames=2.5), "num_frames must be a whole number"),
    (dict(temperature=0.0), "temperature must be positive"),
    (dict(top_p=1.5), "top_p must be in (0, 1]"),
    (dict(max_polyphony=-1), "max_polyphony"),
    (dict(velocity=0), "velocity"),
    (dict(prime="radio"), "unknown prime source"),
    (dict(tempo_bpm=1e9), "the tempo must be from"),
])
def test_bad_settings_are_refused_before_any_work(studio, change, says):
  request = core.Request(model=MODEL, **change)
  with pytest.raises(core.StudioError, match=None) as caught:
    studio.generate(request)
  assert says in str(caught.value)
  assert "--" not in str(caught.value)  # the page's words, not the command line's


def test_a_request_too_large_for_the_free_memory_is_refused(studio, monkeypatch):
  monkeypatch.setattr(core, "free_memory_bytes", lambda: 64 * 2**20)
  with pytest.raises(core.StudioError, match="needs about .* GiB and this machine has"):
    studio.generate(core.Request(model=MODEL, num_frames=4096, num_samples=16))


def test_generate_writes_each_sample_inside_the_output_folder(studio, first_result):
  result = first_result
  assert os.path.dirname(result.folder) == studio.results_dir
  assert len(result.samples) == SAMPLES
  for sample in result.samples:
    assert os.path.commonpath([sample.midi, studio.out_dir]) == studio.out_dir
    notes = [m for m in mido.MidiFile(sample.midi) if m.type == "note_on" and m.velocity]
    assert notes
    with open(sample.json) as f:
      record = json.load(f)
    assert record["num_frames"] == FRAMES and record["max_polyphony"] == 4
  with open(result.settings_path) as f:
    settings = json.load(f)
  assert settings["model"] == MODEL and settings["sampling"]["temperature"] == 1.0
  assert settings["prime"]["frames"] == 13  # the shipped prime, whole, by default
  assert result.timing["compiled"]


def test_new_temperatures_reuse_the_compiled_sampler_and_change_the_music(studio, first_result):
  compiles = studio.samplers.compiles
  hot = studio.generate(core.Request(model=MODEL, num_frames=FRAMES, num_samples=SAMPLES,
                                     temperature=1.6, top_p=0.8, seed=0))
  assert studio.samplers.compiles == compiles and not hot.timing["compiled"]
  assert hot.settings["sampling"]["temperature"] == 1.6
  first = mido.MidiFile(first_result.samples[0].midi)
  assert [m.bytes() for m in mido.MidiFile(hot.samples[0].midi)] != [m.bytes() for m in first]
  assert hot.folder != first_result.folder


def test_bad_uploads_say_what_is_wrong_and_write_nothing(studio, tmp_path, first_result):
  before = sorted(os.listdir(studio.results_dir))
  text = tmp_path / "notes.txt"
  text.write_text("not music")
  empty = tmp_path / "empty.mid"
  empty.write_bytes(b"")
  for request, says in (
      (core.Request(model=MODEL, prime="upload", upload=str(text)), "not a MIDI file"),
      (core.Request(model=MODEL, prime="upload", upload=str(empty)), "is empty"),
      (core.Request(model=MODEL, prime="upload", upload=None), "upload a MIDI file"),
      (core.Request(model=MODEL, prime_frames=200), "fewer than prime_frames=200"),
      (core.Request(model="shipped:nothing"), "no model"),
  ):
    with pytest.raises(core.StudioError, match=says):
      studio.generate(request)
  assert sorted(os.listdir(studio.results_dir)) == before


def test_an_uploaded_prime_is_continued(studio, first_result):
  result = studio.generate(core.Request(model=MODEL, prime="upload", prime_frames=8,
                                        upload=first_result.samples[0].midi, num_frames=FRAMES,
                                        num_samples=SAMPLES))
  assert result.settings["prime"]["kind"] == "midi" and result.settings["prime"]["frames"] == 8


def test_a_second_request_waits_for_the_first(studio, first_result):
  done = []
  request = core.Request(model=MODEL, num_frames=FRAMES, num_samples=SAMPLES, seed=3)
  with studio.lock:  # a request in progress
    waiting = threading.Thread(target=lambda: done.append(studio.generate(request)))
    waiting.start()
    time.sleep(0.5)
    assert not done and waiting.is_alive()
  waiting.join(timeout=120)
  assert done and os.path.isfile(done[0].samples[0].midi)


def test_results_page_links_only_files_of_the_result(studio, first_result):
  from musicgen_jax.studio import app  # pylint: disable=g-import-not-at-top
  page = app.results_html(studio, first_result)
  run = os.path.basename(first_result.folder)
  assert page.count('class="download-midi"') == SAMPLES
  assert f'{app.FILES_ROUTE}/{run}/sample_000.mid' in page
  assert f'{app.FILES_ROUTE}/{run}/settings.json' in page
  assert studio.out_dir not in page.replace(f"<code>{first_result.folder}</code>", "")


def _page_values(**change):
  from musicgen_jax.studio import app  # pylint: disable=g-import-not-at-top
  values = dict(model=MODEL, prime="the model's own prime", upload=None, held_out=None,
                prime_frames=13, num_frames=FRAMES, num_samples=SAMPLES, temperature=1.0,
                top_p=1.0, max_polyphony=4, seed=0, tempo=0, velocity=80,
                velocity_temperature=1.0)
  values.update(change)
  return [values[k] for k in app.GENERATE_INPUTS]


def test_page_functions_answer_bad_input_with_a_message(studio, tmp_path, first_result):
  pytest.importorskip("gradio")
  from musicgen_jax.studio import app  # pylint: disable=g-import-not-at-top
  status, results = app.generate_request(studio, *_page_values())
  assert status == "" and 'class="download-midi"' in results
  text = tmp_path / "song.mid"
  text.write_text("<html>not music</html>")
  for change, says in ((dict(num_frames=10**7), "num_frames must be a whole number"),
                       (dict(prime="an uploaded MIDI file", upload=str(text)),
                        "song.mid: not a MIDI file"),
                       (dict(seed=1.5), "not a whole number"),
                       (dict(temperature="hot"), "could not convert")):
    status, results = app.generate_request(studio, *_page_values(**change))
    assert status.startswith("**Could not generate:**") and says in status, status
    assert isinstance(results, dict)  # an update that leaves the earlier results shown


def test_page_shows_each_model_with_its_own_settings(studio):
  pytest.importorskip("gradio")
  from musicgen_jax.studio import app  # pylint: disable=g-import-not-at-top
  about, temperature, top_p, polyphony, prime_frames, velocity, dynamics = app.show_model(
      studio, "shipped:piano")
  assert "piano" in about and "6.425" in about and prime_frames == 10 and polyphony == 0
  assert velocity["visible"] is False and dynamics["visible"] is True  # piano has dynamics
  chorales = app.show_model(studio, MODEL)
  assert chorales[3] == 4 and chorales[5]["visible"] is True and chorales[6]["visible"] is False
  assert "no model" in app.show_model(studio, "shipped:nothing")[0]


# End to end: the server in its own process, the page in headless Chromium. -------------



@pytest.fixture
def server(tmp_path):
  pytest.importorskip("selenium")
  pytest.importorskip("gradio")
  if studio_timing.find_chromium() is None:
    pytest.skip(f"no headless browser: {studio_timing.BROWSER_HINT}")
  if not audio_lib.available():
    pytest.skip(f"the page's audio needs the audio extra: {audio_lib.INSTALL_HINT}")
  out = str(tmp_path / "out")
  with studio_timing.studio_server(out) as url:
    yield url, out


def test_page_generates_plays_and_offers_the_midi(server, tmp_path):
  from selenium.webdriver.common.by import By  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.support.ui import WebDriverWait  # pylint: disable=g-import-not-at-top
  url, out = server
  driver = studio_timing.chromium()
  try:
    driver.get(url)
    wait = WebDriverWait(driver, 120)
    wait.until(lambda d: d.find_element(By.ID, "generate"))
    _, duration, _ = studio_timing.click_to_audio(driver, timeout=120)
    assert duration > 1.0  # seconds of music, as the browser reads the file
    audio = driver.find_element(By.CSS_SELECTOR, "#results audio")
    driver.execute_script("arguments[0].muted = true; arguments[0].play();", audio)
    wait.until(lambda d: d.execute_script("return arguments[0].currentTime;", audio) > 0.2)
    href = driver.find_element(By.CSS_SELECTOR, "#results a.download-midi").get_attribute("href")
    midi = mido.MidiFile(file=io.BytesIO(urllib.request.urlopen(href).read()))
    assert midi.length > 1.0
    assert not driver.find_element(By.ID, "status").text  # no error shown
    # A file that is not MIDI, as the prime: a message in the page, no traceback.
    driver.find_element(By.XPATH, "//label[contains(., 'an uploaded MIDI file')]").click()
    bad = tmp_path / "notes.txt"
    bad.write_text("not music")
    upload = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#upload input[type=file]"))
    upload.send_keys(str(bad))
    wait.until(lambda d: ".txt" in d.find_element(By.ID, "upload").text)
    driver.find_element(By.ID, "generate").click()
    status = wait.until(lambda d: d.find_element(By.ID, "status").text or None)
    assert "notes.txt: not a MIDI file" in status and "Traceback" not in status
  finally:
    driver.quit()
  written = [os.path.join(d, f) for d, _, fs in os.walk(out) for f in fs]
  assert any(f.endswith(".ogg") for f in written)
