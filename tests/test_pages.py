"""Listening pages: plain HTML that parses, and every file it points to exists."""

import html.parser
import pathlib

import pytest

from musicgen_jax import pages

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "results"


class _Collect(html.parser.HTMLParser):
  def __init__(self):
    super().__init__()
    self.tags = []

  def handle_starttag(self, tag, attrs):
    self.tags.append((tag, dict(attrs)))


def _parse(text):
  parser = _Collect()
  parser.feed(text)
  parser.close()
  return parser.tags


def test_a_music_page_lists_numbers_rolls_and_players(tmp_path):
  for name in ("a/sample_000.ogg", "a/sample_000.png", "reference/prime.ogg"):
    (tmp_path / name).parent.mkdir(exist_ok=True)
    (tmp_path / name).write_bytes(b"x")
  page = pages.music_page(
      "Title <&>", "intro", [pages.Entry("prime", audio=["reference/prime.ogg"])],
      [("lstm", [pages.Entry("lstm 48", numbers={"test NLL": "7.10"}, roll="a/sample_000.png",
                             audio=["a/sample_000.ogg"])])])
  path = pages.write(str(tmp_path), page)
  tags = _parse(pathlib.Path(path).read_text())
  assert [a["src"] for t, a in tags if t == "audio"] == ["reference/prime.ogg",
                                                           "a/sample_000.ogg"]
  assert any(t == "img" and a["src"] == "a/sample_000.png" for t, a in tags)
  assert not any(t == "script" for t, _ in tags)  # no JavaScript
  assert "Title &lt;&amp;&gt;" in pathlib.Path(path).read_text()
  with pytest.raises(FileNotFoundError, match="missing"):
    pages.write(str(tmp_path), page.replace("a/sample_000.png", "a/none.png"))


def test_markdown_reports_become_pages():
  text = pages.markdown_to_html("# T\n\nA `code` **b** [x](y.md).\n\n| a | b |\n|---|---|\n"
                                "| 1 | 2 |\n\n- one\n  more\n- two\n\n![p](p.png)\n")
  tags = [t for t, _ in _parse(text)]
  assert tags.count("td") == 2 and tags.count("li") == 2 and "img" in tags
  assert pages.referenced_files(text) == ["y.md", "p.png"]


def test_every_committed_page_parses_and_its_files_exist():
  found = sorted(RESULTS.rglob("index.html"))
  assert found, "no listening page in experiments/results"
  for page in found:
    text = page.read_text()
    _parse(text)
    missing = [p for p in pages.referenced_files(text) if not (page.parent / p).exists()]
    assert not missing, f"{page}: {missing[:5]}"
  # Every report has its page.
  for report in RESULTS.rglob("*.md"):
    assert (report.parent / "index.html").exists(), report


@pytest.mark.skipif(pages.find_browser() is None, reason="no Chromium or Chrome installed")
def test_a_browser_plays_the_audio_of_a_page(tmp_path):
  """Headless Chromium opens a page from disk: a rendered OGG reports its duration, a
  broken one is reported as not playing."""
  from musicgen_jax import audio, frames_to_midi  # pylint: disable=g-import-not-at-top
  if not audio.available():
    pytest.skip("the audio extra is not installed")
  import numpy as np  # pylint: disable=g-import-not-at-top
  frames = np.zeros((4, 107), np.float32)
  frames[:, 39] = 1.0
  frames[:, 106] = 2.0  # four half notes at 120 bpm: 4 s
  frames_to_midi(frames).save(str(tmp_path / "a.mid"))
  audio.render_midi(str(tmp_path / "a.mid"), str(tmp_path / "a.ogg"))
  (tmp_path / "broken.ogg").write_bytes(b"not audio")
  pages.write(str(tmp_path), pages.music_page(
      "t", "i", [], [("s", [pages.Entry("x", audio=["a.ogg", "broken.ogg"])])]))
  players = pages.check_in_browser(str(tmp_path / "index.html"),
                                   screenshot=str(tmp_path / "shot.png"))
  assert [p["src"] for p in players] == ["a.ogg", "broken.ogg"]
  assert players[0]["duration_s"] == pytest.approx(4.0, abs=1.0)  # plus the release tail
  assert players[1]["duration_s"] is None and players[1]["error"]
  assert (tmp_path / "shot.png").stat().st_size > 0
  assert not (tmp_path / ".browser_check.html").exists()
