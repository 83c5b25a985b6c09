r"""The studio as a person meets it: click to audio for each shipped model, and a screenshot.

    python -m experiments.studio_timing --out_dir=experiments/results/studio
    (needs: pip install -e ".[studio,test,audio]"; apt-get install chromium chromium-driver)

Starts `python -m musicgen_jax.studio` on a free localhost port, opens it in headless
Chromium (Debian's chromium and chromium-driver, driven by selenium), and for each shipped
model clicks Generate twice with the page's defaults (256 frames, 2 samples): the first
request compiles the model's sampler, the second (another temperature) reuses it. Each time
is from the click until the first audio player of the results has read its file. Writes
timing.md, its index.html and studio.png (the page after the last request) in --out_dir.
About a minute on 2 CPU cores.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from absl import app, flags

from musicgen_jax import pages

BROWSER_ARGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--window-size=1280,1800",
                "--autoplay-policy=no-user-gesture-required")
BROWSER_HINT = "apt-get install chromium chromium-driver, and pip install selenium"


def find_chromium() -> tuple[str, str] | None:
  """(browser, chromedriver) paths, or None where either is missing."""
  browser = shutil.which("chromium") or shutil.which("chromium-browser")
  driver = shutil.which("chromedriver")
  return (browser, driver) if browser and driver else None


def chromium():
  """A headless Chromium under selenium, with the installed driver (nothing downloaded)."""
  from selenium import webdriver  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.chrome.service import Service  # pylint: disable=g-import-not-at-top
  found = find_chromium()
  if found is None:
    raise FileNotFoundError(f"no Chromium with its driver: {BROWSER_HINT}")
  options = webdriver.ChromeOptions()
  options.binary_location = found[0]
  for arg in BROWSER_ARGS:
    options.add_argument(arg)
  return webdriver.Chrome(service=Service(found[1]), options=options)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@contextlib.contextmanager
def studio_server(out_dir: str, *flags_: str, timeout: float = 120):
  """Runs the studio in its own process until the block ends; yields its URL."""
  port = free_port()
  os.makedirs(out_dir, exist_ok=True)
  log_path = os.path.join(out_dir, "server.log")
  with open(log_path, "w") as log:
    process = subprocess.Popen([sys.executable, "-m", "musicgen_jax.studio",
                                f"--out_dir={out_dir}", f"--port={port}", *flags_],
                               stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + timeout
    try:
      while True:
        try:
          urllib.request.urlopen(url, timeout=2).read()
          break
        except OSError as e:
          if process.poll() is not None or time.time() > deadline:
            with open(log_path) as f:
              raise RuntimeError(f"the studio did not start:\n{f.read()[-2000:]}") from e
          time.sleep(0.5)
      yield url
    finally:
      process.terminate()
      process.wait(timeout=30)


def audio_duration(driver, element) -> float | None:
  """The duration the browser read for an <audio> element, once it has its metadata."""
  return driver.execute_script(
      "const a = arguments[0]; return a.readyState >= 1 ? a.duration : null;", element)


def click_to_audio(driver, timeout: float = 300) -> tuple[float, float, str]:
  """Clicks Generate; (seconds until the new results' first player has read its file, that
  file's duration, the results' first line)."""
  from selenium.webdriver.common.by import By  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.support.ui import WebDriverWait  # pylint: disable=g-import-not-at-top
  old = {a.get_attribute("src") for a in driver.find_elements(By.CSS_SELECTOR, "#results audio")}
  start = time.perf_counter()
  driver.find_element(By.ID, "generate").click()
  wait = WebDriverWait(driver, timeout, poll_frequency=0.05)
  audio = wait.until(lambda d: next((a for a in d.find_elements(By.CSS_SELECTOR, "#results audio")
                                     if a.get_attribute("src") not in old), None))
  duration = wait.until(lambda d: audio_duration(d, audio))
  seconds = time.perf_counter() - start
  first_line = driver.find_element(By.CSS_SELECTOR, "#results p").text
  return seconds, duration, re.sub(r" in \S*/(runs/[^:]+):", r" in \1:", first_line)


def choose(driver, elem_id: str, text: str) -> None:
  """Picks the option containing `text` in a Gradio dropdown."""
  from selenium.webdriver.common.by import By  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.support.ui import WebDriverWait  # pylint: disable=g-import-not-at-top
  driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input").click()
  option = WebDriverWait(driver, 30).until(lambda d: next(
      (o for o in d.find_elements(By.CSS_SELECTOR, "li[role=option]") if text in o.text), None))
  option.click()
  WebDriverWait(driver, 30).until(
      lambda d: text in d.find_element(By.CSS_SELECTOR, f"#{elem_id} input").get_attribute("value"))


def set_number(driver, elem_id: str, value: float) -> None:
  """Types a value into a Gradio slider's number box."""
  from selenium.webdriver.common.by import By  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.common.keys import Keys  # pylint: disable=g-import-not-at-top
  box = driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=number]")
  box.send_keys(Keys.CONTROL, "a")
  box.send_keys(str(value), Keys.TAB)


FLAGS = flags.FLAGS


def define_flags() -> None:
  """The program's flags (defined when it runs: the tests import the helpers above)."""
  flags.DEFINE_string("out_dir", "experiments/results/studio",
                      "Where timing.md, index.html and studio.png go.")
  flags.DEFINE_list("models", ["chorales", "piano"], "Shipped models to time, in this order.")


def main(argv):
  del argv
  from selenium.webdriver.common.by import By  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.support.ui import WebDriverWait  # pylint: disable=g-import-not-at-top
  rows = []
  with tempfile.TemporaryDirectory() as work:
    with studio_server(os.path.join(work, "studio")) as url:
      driver = chromium()
      try:
        start = time.perf_counter()
        driver.get(url)
        WebDriverWait(driver, 60).until(lambda d: d.find_element(By.ID, "generate"))
        page_seconds = time.perf_counter() - start
        for name in FLAGS.models:
          choose(driver, "model", f"{name} (shipped")
          for attempt, temperature in (("first (compiles)", None), ("again, T=1.2", 1.2)):
            if temperature is not None:
              set_number(driver, "temperature", temperature)
            seconds, duration, line = click_to_audio(driver)
            rows.append((name, attempt, seconds, duration, line))
            print(f"{name}, {attempt}: {seconds:.2f} s to audio ({duration:.1f} s of music)"
                  f" - {line}", flush=True)
        os.makedirs(FLAGS.out_dir, exist_ok=True)
        driver.save_screenshot(os.path.join(FLAGS.out_dir, "studio.png"))
      finally:
        driver.quit()
  lines = ["# The studio: from the click to audio", "",
           "`python -m experiments.studio_timing` (the page's defaults: 256 frames, 2 samples, "
           "OGG audio); " f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU. Page "
           f"loaded in {page_seconds:.1f} s.", "",
           "| model | request | click to audio (s) | music (s) | the page's own account |",
           "|---|---|---|---|---|"]
  lines += [f"| {n} | {a} | {s:.2f} | {d:.1f} | {line} |" for n, a, s, d, line in rows]
  lines += ["", "The page after the last request:", "", "![the studio](studio.png)"]
  report = os.path.join(FLAGS.out_dir, "timing.md")
  with open(report, "w") as f:
    f.write("\n".join(lines) + "\n")
  pages.write(FLAGS.out_dir, pages.report_page(report))
  print("\n".join(lines))


if __name__ == "__main__":
  define_flags()
  app.run(main)
