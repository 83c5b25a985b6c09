"""Listening pages: an index.html beside each report, to read the numbers and hear the music.

Plain HTML, no script and nothing from the network: the page opens from disk in any
browser. A music report's page shows, per model, its numbers, the piano roll and an audio
player for each continuation, with the prime and a real held-out excerpt as references;
any other report's page shows its markdown as HTML.

    python -m musicgen_jax.pages experiments/results/study/results.md  # (re)writes index.html
    python -m musicgen_jax.pages samples out                           # a sampler's folder
    python -m musicgen_jax.pages check out/index.html [--screenshot=P]

`sample` writes its folder's page itself. `check` opens a page as a person would, in
headless Chromium (or Chrome), and prints the duration the browser reads for each audio
player; it fails when one does not play.
"""

from __future__ import annotations

import dataclasses
import html
import os
import re
import shutil
import subprocess

from absl import flags

from musicgen_jax import cli

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto;
       padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: left; }
.entry { border-top: 1px solid #ddd; padding: 1rem 0; }
.entry img { max-width: 100%; }
audio { display: block; margin: 0.3rem 0; width: 28rem; }
.numbers { color: #555; }
code { background: #f4f4f4; padding: 0 0.2rem; }
"""


@dataclasses.dataclass
class Entry:
  """One model (or reference) on a page; paths relative to the page's folder."""

  title: str
  numbers: dict = dataclasses.field(default_factory=dict)
  roll: str | None = None
  audio: list[str] = dataclasses.field(default_factory=list)
  text: str = ""


def _entry(entry: Entry) -> str:
  parts = [f'<div class="entry"><h3>{html.escape(entry.title)}</h3>']
  if entry.numbers:
    parts.append('<p class="numbers">' + " &middot; ".join(
        f"{html.escape(k)}: <b>{html.escape(str(v))}</b>" for k, v in entry.numbers.items())
                 + "</p>")
  if entry.text:
    parts.append(f"<p>{html.escape(entry.text)}</p>")
  for i, path in enumerate(entry.audio):
    label = html.escape(os.path.splitext(os.path.basename(path))[0])
    parts.append(f'<figure><figcaption>{label}</figcaption><audio controls preload="metadata" '
                 f'src="{html.escape(path)}"></audio></figure>')
  if entry.roll:
    parts.append(f'<img src="{html.escape(entry.roll)}" alt="piano roll of '
                 f'{html.escape(entry.title)}" loading="lazy">')
  parts.append("</div>")
  return "\n".join(parts)


def music_page(title: str, intro: str, references: list[Entry],
               sections: list[tuple[str, list[Entry]]], report: str | None = None) -> str:
  """A page: the intro, the references (prime, real music), then each section's entries."""
  body = [f"<h1>{html.escape(title)}</h1>", f"<p>{html.escape(intro)}</p>"]
  if report:
    body.append(f'<p>The full report: <a href="{html.escape(report)}">'
                f"{html.escape(report)}</a>.</p>")
  if references:
    body.append("<h2>References</h2>")
    body += [_entry(e) for e in references]
  for heading, entries in sections:
    body.append(f"<h2>{html.escape(heading)}</h2>")
    body += [_entry(e) for e in entries]
  return _document(title, "\n".join(body))


PAGE_COMPRESSION = 1.0  # report pages: the smallest OGG (~30 kbit/s at 22 kHz), fine for piano


def copy_samples(samples_dir: str, report_dir: str, name: str, count: int) -> list[str]:
  """Copies the first `count` samples of a run (MIDI; the first piano roll) to REPORT/name,
  renders their audio small for the page, and returns the audio paths relative to REPORT."""
  from musicgen_jax import audio  # pylint: disable=g-import-not-at-top
  out = os.path.join(report_dir, name)
  os.makedirs(out, exist_ok=True)
  sounds = []
  for i in range(count):
    stem = f"sample_{i:03d}"
    midi = os.path.join(samples_dir, stem + ".mid")
    if not os.path.exists(midi):
      continue
    shutil.copy(midi, out)
    if i == 0 and os.path.exists(os.path.join(samples_dir, stem + ".png")):
      shutil.copy(os.path.join(samples_dir, stem + ".png"), out)
    if audio.available():
      audio.render_midi(midi, os.path.join(out, stem + ".ogg"),
                        compression_level=PAGE_COMPRESSION)
      sounds.append(f"{name}/{stem}.ogg")
  return sounds


def references(report_dir: str, prime_file: str, prime_frames: int, held_out: list,
               length: int, with_velocity: bool = False) -> list[Entry]:
  """The prime and the start of the longest held-out piece, as MIDI, piano roll and audio
  (at their own tempo) in REPORT/reference: what the models continue, and real music."""
  from musicgen_jax import audio, plotting  # pylint: disable=g-import-not-at-top
  from musicgen_jax.encoding import encode_midi, frames_to_midi  # pylint: disable=g-import-not-at-top
  out = os.path.join(report_dir, "reference")
  os.makedirs(out, exist_ok=True)
  prime, stats = encode_midi(prime_file, with_velocity=with_velocity)
  piece = max(held_out, key=lambda p: p.num_frames)
  made = {"prime": (prime[:prime_frames], stats.tempo_bpm, stats.time_signature,
                    f"The first {prime_frames} frames of {os.path.basename(prime_file)}: what "
                    "every model continues."),
          "held_out": (piece.frames[:length], piece.tempo_bpm, piece.time_signature,
                       f"The first {length} frames of {piece.name}, a held-out test piece: "
                       "real music of the length of a continuation.")}
  entries = []
  for name, (frames, tempo, meter, text) in made.items():
    stem = os.path.join(out, name)
    frames_to_midi(frames, tempo_bpm=tempo, time_signature=meter).save(stem + ".mid")
    plotting.piano_roll(frames, stem + ".png", title=name)
    sounds = [f"reference/{name}.ogg"] if audio.available() else []
    if sounds:
      audio.render_midi(stem + ".mid", stem + ".ogg", compression_level=PAGE_COMPRESSION)
    entries.append(Entry(name.replace("_", " "), text=text, audio=sounds,
                         roll=f"reference/{name}.png"))
  return entries


def _document(title: str, body: str) -> str:
  return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
          f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
          f"{body}\n</body>\n</html>\n")


def _inline(text: str) -> str:
  """Markdown inline: code, bold, links and images, on escaped text."""
  text = html.escape(text, quote=False)
  text = re.sub(r"!\[([^\]]*)\]\(([^)]+)\)", r'<img src="\2" alt="\1">', text)
  text = re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r'<a href="\2">\1</a>', text)
  text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
  return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)


def _table(rows: list[str]) -> str:
  cells = [[c.strip() for c in r.strip().strip("|").split("|")] for r in rows
           if not re.fullmatch(r"\|?[\s:|-]+\|?", r.strip())]
  head, body = cells[0], cells[1:]
  out = ["<table>", "<tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr>"]
  out += ["<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in body]
  return "\n".join(out + ["</table>"])


def markdown_to_html(markdown: str) -> str:
  """The subset of markdown the reports use: headings, paragraphs, lists, tables, code."""
  out, lines, i = [], markdown.splitlines(), 0
  while i < len(lines):
    line = lines[i]
    if line.startswith("```"):
      end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), len(lines))
      out.append("<pre>" + html.escape("\n".join(lines[i + 1:end])) + "</pre>")
      i = end + 1
    elif line.startswith("|"):
      end = next((j for j in range(i, len(lines)) if not lines[j].startswith("|")), len(lines))
      out.append(_table(lines[i:end]))
      i = end
    elif line.startswith("#"):
      level = len(line) - len(line.lstrip("#"))
      out.append(f"<h{level}>{_inline(line.lstrip('#').strip())}</h{level}>")
      i += 1
    elif line.lstrip().startswith(("- ", "* ")):
      end = next((j for j in range(i, len(lines))
                  if not lines[j].lstrip().startswith(("- ", "* ")) and
                  not (lines[j].startswith("  ") and lines[j].strip())), len(lines))
      items = _items(lines[i:end])
      out.append("<ul>" + "".join(f"<li>{_inline(x)}</li>" for x in items) + "</ul>")
      i = end
    elif line.strip():
      end = next((j for j in range(i, len(lines)) if not lines[j].strip() or
                  lines[j].startswith(("#", "|", "```", "- "))), len(lines))
      out.append("<p>" + _inline(" ".join(l.strip() for l in lines[i:end])) + "</p>")
      i = end
    else:
      i += 1
  return "\n".join(out)


def _items(lines: list[str]) -> list[str]:
  items = []
  for line in lines:
    if line.lstrip().startswith(("- ", "* ")):
      items.append(line.lstrip()[2:].strip())
    elif items:
      items[-1] += " " + line.strip()
  return items


def report_page(*markdown_paths: str) -> str:
  """index.html content for reports without music: their markdown as HTML, one after another."""
  texts = []
  for path in markdown_paths:
    with open(path) as f:
      texts.append(f.read())
  title = next((l.lstrip("#").strip() for l in texts[0].splitlines() if l.startswith("#")),
               os.path.basename(markdown_paths[0]))
  if len(texts) > 1:
    links = " &middot; ".join(f'<a href="{html.escape(os.path.basename(p))}">'
                              f"{html.escape(os.path.basename(p))}</a>" for p in markdown_paths)
    body = f"<p>Reports: {links}</p>\n" + "\n<hr>\n".join(map(markdown_to_html, texts))
    return _document("Reports", body)
  return _document(title, markdown_to_html(texts[0]))


def referenced_files(page: str) -> list[str]:
  """Every local file a page points to (src= and href=, not web or in-page links)."""
  found = re.findall(r'(?:src|href)="([^"]+)"', page)
  return [html.unescape(p) for p in found if not p.startswith(("http:", "https:", "#", "data:"))]


def write(folder: str, page: str, name: str = "index.html") -> str:
  missing = [p for p in referenced_files(page) if not os.path.exists(os.path.join(folder, p))]
  if missing:
    raise FileNotFoundError(f"{folder}/{name} would point to missing files: {missing[:5]}")
  path = os.path.join(folder, name)
  with open(path, "w") as f:
    f.write(page)
  return path


def samples_page(folder: str) -> str:
  """index.html content for a folder the sampler wrote: each sample's roll and audio."""
  import json  # pylint: disable=g-import-not-at-top
  entries = []
  for record_path in sorted(p for p in os.listdir(folder) if re.fullmatch(r"sample_\d+\.json", p)):
    with open(os.path.join(folder, record_path)) as f:
      record = json.load(f)
    entries.append(Entry(
        os.path.splitext(record_path)[0],
        numbers={"model": record["model"]["model"], "temperature": record["temperature"],
                 "notes": record["num_notes"], "quarters": round(record["length_quarters"], 1)},
        roll=record.get("png"), audio=[record["audio"]] if record.get("audio") else []))
  first = entries[0].numbers["model"] if entries else "?"
  return music_page(f"Samples: {first} model", f"{len(entries)} samples in {folder}, each "
                    "beside its MIDI file (sample_NNN.mid); the prime is grey in each piano "
                    "roll.", [], [("Samples", entries)])


BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
BROWSER_HINT = ("install one: apt-get install chromium (Debian, Ubuntu), or Google Chrome; "
                "the page itself opens from disk in any browser")
# Injected into a temporary copy of the page only (the pages themselves carry no script):
# each audio element's duration, or its error code, as an attribute --dump-dom shows.
_MARK_AUDIO = """<script>
for (const a of document.querySelectorAll('audio')) {
  const mark = () => { a.dataset.duration = a.duration.toFixed(2); };
  if (a.readyState >= 1) mark(); else a.addEventListener('loadedmetadata', mark);
  a.addEventListener('error', () => { a.dataset.error = String(a.error ? a.error.code : '?'); });
  if (a.error) a.dataset.error = String(a.error.code);
}
</script>"""


def find_browser() -> str | None:
  return next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)


def _browser(browser: str, url: str, *extra: str, timeout: float = 120) -> str:
  command = [browser, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--allow-file-access-from-files",
             "--virtual-time-budget=10000", *extra, url]
  done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
  if done.returncode != 0:
    raise RuntimeError(f"{os.path.basename(browser)} failed (rc {done.returncode}): "
                       f"{done.stderr.strip()[-400:]}")
  return done.stdout


def check_in_browser(page_path: str, screenshot: str | None = None,
                     browser: str | None = None) -> list[dict]:
  """Opens the page from disk in a headless browser: per audio element its src and the
  duration the browser read (None, with the error code, where it could not play it)."""
  browser = browser or find_browser()
  if browser is None:
    raise FileNotFoundError(f"no headless browser found (looked for {', '.join(BROWSERS)}): "
                            f"{BROWSER_HINT}")
  page_path = os.path.abspath(page_path)
  with open(page_path) as f:
    text = f.read()
  probe = os.path.join(os.path.dirname(page_path), ".browser_check.html")
  with open(probe, "w") as f:
    f.write(text.replace("</body>", _MARK_AUDIO + "\n</body>"))
  try:
    dom = _browser(browser, "file://" + probe, "--dump-dom")
    if screenshot:
      _browser(browser, "file://" + page_path, f"--screenshot={os.path.abspath(screenshot)}",
               "--window-size=1280,2400", "--hide-scrollbars")
  finally:
    os.remove(probe)
  found = []
  for tag in re.findall(r"<audio\b[^>]*>", dom):
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', tag))
    duration = attrs.get("data-duration")
    found.append({"src": html.unescape(attrs.get("src", "")),
                  "duration_s": float(duration) if duration else None,
                  "error": attrs.get("data-error")})
  return found


def _check(pages: list[str], screenshot: str | None) -> None:
  failed = 0
  for page in pages:
    if not os.path.isfile(page):
      raise FileNotFoundError(f"{page} does not exist; give a page (index.html) to check")
    players = check_in_browser(page, screenshot)
    for p in players:
      state = (f"{p['duration_s']:.1f} s" if p["duration_s"] is not None else
               f"does not play (error {p['error']})")
      print(f"{page}: {p['src']}: {state}")
    bad = [p for p in players if p["duration_s"] is None or p["duration_s"] <= 0]
    failed += len(bad)
    print(f"{page}: {len(players) - len(bad)} of {len(players)} audio players play")
  if failed:
    raise cli.Failure(f"{failed} audio player(s) do not play")


USAGE = ("give REPORT.md ... (a page per folder), samples DIR ... (a sampler's folder), or "
         "check PAGE ... [--screenshot=PNG]")


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  flags.DEFINE_string("screenshot", None, "check: also save a screenshot of the page here.",
                      flag_values=flag_values)


def main(flag_values: flags.FlagValues, args: list[str]) -> None:
  """pages REPORT.md ... (reports' markdown as a page per folder), pages samples DIR ...,
  or pages check PAGE ... [--screenshot=PNG]."""
  if not args or (args[0] in ("check", "samples") and len(args) == 1):
    raise cli.UsageError(USAGE)
  if args[0] == "check":
    _check(args[1:], flag_values.screenshot)
    return
  if args[0] == "samples":
    for folder in args[1:]:
      print(write(folder, samples_page(folder)))
    return
  folders: dict[str, list[str]] = {}
  for markdown_path in args:
    folders.setdefault(os.path.dirname(markdown_path) or ".", []).append(markdown_path)
  for folder, paths in folders.items():
    print(write(folder, report_page(*paths)))


def run():
  cli.run(main, define_flags, positional=True)


if __name__ == "__main__":
  run()
