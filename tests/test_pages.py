"""Listening pages: plain HTML that parses, and every file it points to exists."""

import html.parser
import pathlib

import pytest

from experiments import pages

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "results"


class _Collect(html.parser.HTMLParser):
  def __init__(self):
    super().__init__()
    self.tags, self.open = [], []

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
