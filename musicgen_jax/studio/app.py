r"""The studio's web page (Gradio) and server, and its program.

    python -m musicgen_jax.studio                       # the shipped models, on localhost:7860
    python -m musicgen_jax.studio --runs_dir=runs --out_dir=studio_out --port=8000

The page lists the models, takes a prime, exposes the sampler's settings, and shows each
sample as a piano roll with a player and downloads (MIDI, audio, settings). Results are
served from O/runs/ under /studio-files/; uploads go to O/uploads/. It listens on
127.0.0.1 unless --host says otherwise, and loads nothing from the network.
"""

from __future__ import annotations

import html
import os

from absl import flags, logging

from musicgen_jax import cli
from musicgen_jax.studio import core

FILES_ROUTE = "/studio-files"
DEFAULT_PORT = 7860
PRIME_LABELS = {"the model's own prime": "shipped", "an uploaded MIDI file": "upload",
                "a held-out piece of its dataset": "held_out"}
CSS = """
.studio-sample { border-top: 1px solid #ddd; padding: 0.8rem 0; }
.studio-sample img { max-width: 100%; }
.studio-sample audio { display: block; width: 100%; max-width: 32rem; margin: 0.3rem 0; }
.studio-sample a { margin-right: 1rem; }
"""


def files_url(studio: core.Studio, path: str) -> str:
  """The URL the server gives a file written under O/runs/."""
  relative = os.path.relpath(path, studio.results_dir)
  return f"{FILES_ROUTE}/" + "/".join(relative.split(os.sep))


def results_html(studio: core.Studio, result: core.Result) -> str:
  """Each sample's piano roll, player and downloads, and the request's timing."""
  timing = result.timing
  compiled = (f"compiled the sampler in {timing['compile_seconds']:.1f} s, " if
              timing.get("compiled") else "sampler reused, ")
  parts = [f'<div class="studio-results"><p>{len(result.samples)} samples in '
           f"<code>{html.escape(result.folder)}</code>: {compiled}sampled in "
           f"{timing['sample_seconds']:.2f} s, wrote the files in "
           f"{timing['write_seconds']:.1f} s. "
           f'<a class="download-settings" href="{files_url(studio, result.settings_path)}" '
           'download>settings (JSON)</a></p>']
  for sample in result.samples:
    name = os.path.splitext(os.path.basename(sample.midi))[0]
    parts.append(f'<div class="studio-sample"><b>{html.escape(name)}</b>')
    if sample.png:
      parts.append(f'<img src="{files_url(studio, sample.png)}" alt="piano roll of {name}">')
    if sample.audio:
      parts.append(f'<audio controls preload="metadata" src="{files_url(studio, sample.audio)}">'
                   "</audio>")
    parts.append(f'<a class="download-midi" href="{files_url(studio, sample.midi)}" download>'
                 "MIDI</a>")
    if sample.audio:
      parts.append(f'<a class="download-audio" href="{files_url(studio, sample.audio)}" '
                   f"download>audio ({os.path.splitext(sample.audio)[1][1:]})</a>")
    parts.append(f'<a class="download-json" href="{files_url(studio, sample.json)}" '
                 "download>settings of this sample (JSON)</a></div>")
  parts.append("</div>")
  return "\n".join(parts)


def _defaults(entry: core.ModelEntry) -> dict:
  return {"temperature": entry.defaults.get("temperature", 1.0),
          "top_p": entry.defaults.get("top_p", 1.0),
          "max_polyphony": entry.defaults.get("max_polyphony", 0),
          "prime_frames": entry.prime_frames}


GENERATE_INPUTS = ("model", "prime", "upload", "held_out", "prime_frames", "num_frames",
                   "num_samples", "temperature", "top_p", "max_polyphony", "seed", "tempo",
                   "velocity", "velocity_temperature")
MODEL_OUTPUTS = ("about", "temperature", "top_p", "max_polyphony", "prime_frames", "velocity",
                 "velocity_temperature")


def show_model(studio: core.Studio, key: str) -> tuple:
  """A model chosen: its description, its own sampling defaults in the controls, and the
  dynamics controls that apply to it."""
  import gradio as gr  # pylint: disable=g-import-not-at-top
  try:
    entry = studio.entry(key)
  except core.StudioError as e:
    return (str(e),) + (gr.update(),) * (len(MODEL_OUTPUTS) - 1)
  d = _defaults(entry)
  dynamics = bool(entry.config.model.velocity_bins)
  return (entry.describe(), d["temperature"], d["top_p"], d["max_polyphony"], d["prime_frames"],
          gr.update(visible=not dynamics), gr.update(visible=dynamics))


def refresh_models(studio: core.Studio, key: str):
  import gradio as gr  # pylint: disable=g-import-not-at-top
  keys = [e.key for e in studio.refresh()]
  return gr.update(choices=[(e.label, e.key) for e in studio.models()],
                   value=key if key in keys else (keys[0] if keys else None))


def show_prime(studio: core.Studio, choice: str, key: str, progress=None) -> tuple:
  """A prime source chosen: (the upload box, the held-out pieces, a status message)."""
  import gradio as gr  # pylint: disable=g-import-not-at-top
  source = PRIME_LABELS[choice]
  if source != "held_out":
    return gr.update(visible=source == "upload"), gr.update(visible=False), ""
  if progress is not None:
    progress(0.1, desc="reading the run's dataset (encoded once when it is not cached)")
  try:
    pieces = studio.held_out_pieces(key)
  except core.StudioError as e:
    return gr.update(visible=False), gr.update(visible=False), f"**{html.escape(str(e))}**"
  return (gr.update(visible=False),
          gr.update(choices=pieces, value=pieces[0][1] if pieces else None, visible=True), "")


def generate_request(studio: core.Studio, *values, progress=None) -> tuple[str, object]:
  """Generate clicked, with the GENERATE_INPUTS' values: (status, results), where a request
  that cannot be carried out leaves the results as they were and says why in the status."""
  import gradio as gr  # pylint: disable=g-import-not-at-top
  v = dict(zip(GENERATE_INPUTS, values))
  try:
    request = core.Request(
        model=v["model"], prime=PRIME_LABELS.get(v["prime"], v["prime"]), upload=v["upload"],
        held_out=v["held_out"], prime_frames=_whole(v["prime_frames"]),
        num_frames=_whole(v["num_frames"]), num_samples=_whole(v["num_samples"]),
        temperature=float(v["temperature"]), top_p=float(v["top_p"]),
        max_polyphony=_whole(v["max_polyphony"]), seed=_whole(v["seed"]) or 0,
        tempo_bpm=float(v["tempo"]) if v["tempo"] else None,
        velocity=_whole(v["velocity"]) or 80,
        velocity_temperature=float(v["velocity_temperature"]))
    report = (lambda f, what: progress(f, desc=what)) if progress is not None else None
    result = studio.generate(request, report)
  except (core.StudioError, TypeError, ValueError) as e:
    return f"**Could not generate:** {html.escape(str(e))}", gr.update()
  except Exception as e:  # pylint: disable=broad-except
    logging.exception("the studio failed on a request")
    return (f"**Could not generate:** an internal error ({type(e).__name__}); the server's "
            "log has the details", gr.update())
  return "", results_html(studio, result)


def _layout(gr, entries: list[core.ModelEntry]) -> dict:
  """The page's components, by name."""
  first = entries[0] if entries else None
  start = _defaults(first) if first else {"temperature": 1.0, "top_p": 1.0,
                                          "max_polyphony": 0, "prime_frames": 10}
  c = {}
  gr.Markdown("# musicgen-jax studio\nPick a model, give a prime, generate, listen, download.")
  with gr.Row():
    c["model"] = gr.Dropdown([(e.label, e.key) for e in entries],
                             value=first.key if first else None, label="Model", scale=4,
                             elem_id="model")
    c["refresh"] = gr.Button("Refresh the list", scale=1)
  c["about"] = gr.Markdown(first.describe() if first else
                           "No models found: train one, or give --runs_dir.")
  with gr.Row():
    c["prime"] = gr.Radio(list(PRIME_LABELS), value=next(iter(PRIME_LABELS)), label="Prime",
                          elem_id="prime")
    c["prime_frames"] = gr.Number(start["prime_frames"], label="Prime frames to keep",
                                  precision=0, minimum=1, maximum=core.MAX_PRIME_FRAMES)
  c["upload"] = gr.File(label="MIDI file for the prime", type="filepath", visible=False,
                        elem_id="upload")
  c["held_out"] = gr.Dropdown([], label="Held-out piece", visible=False)
  with gr.Accordion("Sampler", open=True):
    with gr.Row():
      c["num_frames"] = gr.Slider(1, core.MAX_FRAMES, 256, step=1, label="Frames to generate")
      c["num_samples"] = gr.Slider(1, core.MAX_SAMPLES, 2, step=1, label="Samples")
      c["seed"] = gr.Number(0, label="Seed", precision=0)
    with gr.Row():
      c["temperature"] = gr.Slider(0.05, 3.0, start["temperature"], step=0.05,
                                   label="Temperature (notes)", elem_id="temperature")
      c["top_p"] = gr.Slider(0.05, 1.0, start["top_p"], step=0.05,
                             label="Top-p (durations; 1 = off)")
      c["max_polyphony"] = gr.Slider(0, 16, start["max_polyphony"], step=1,
                                     label="At most this many notes per onset (0 = no cap)")
    with gr.Row():
      c["tempo"] = gr.Number(0, label="Tempo, bpm (0 = the prime's)", minimum=0,
                            maximum=core.MAX_TEMPO)
      c["velocity"] = gr.Slider(1, 127, 80, step=1, label="Velocity (a model without dynamics)")
      c["velocity_temperature"] = gr.Slider(0.05, 3.0, 1.0, step=0.05,
                                            label="Dynamics temperature")
  c["generate"] = gr.Button("Generate", variant="primary", elem_id="generate")
  c["status"] = gr.Markdown("", elem_id="status")
  c["results"] = gr.HTML("", elem_id="results")
  return c


def build(studio: core.Studio):
  """The Gradio Blocks of the page, wired to the functions above."""
  import gradio as gr  # pylint: disable=g-import-not-at-top

  with gr.Blocks(title="musicgen-jax studio", analytics_enabled=False) as page:
    c = _layout(gr, studio.models())

    def on_prime(choice, key, progress=gr.Progress()):
      return show_prime(studio, choice, key, progress)

    def on_generate(*values, progress=gr.Progress()):
      return generate_request(studio, *values, progress=progress)

    model_outputs = [c[k] for k in MODEL_OUTPUTS]
    c["model"].change(lambda key: show_model(studio, key), c["model"], model_outputs)
    page.load(lambda key: show_model(studio, key), c["model"], model_outputs)
    c["refresh"].click(lambda key: refresh_models(studio, key), c["model"], c["model"])
    c["prime"].change(on_prime, [c["prime"], c["model"]], [c["upload"], c["held_out"],
                                                           c["status"]])
    c["generate"].click(on_generate, [c[k] for k in GENERATE_INPUTS], [c["status"],
                                                                       c["results"]])
  return page


def _whole(value):
  """A number from the page as an int (None stays None); 2.0 is 2, 2.5 is an error."""
  if value is None or value == "":
    return None
  number = float(value)
  if number != int(number):
    raise ValueError(f"{value} is not a whole number")
  return int(number)


def make_app(studio: core.Studio):
  """A FastAPI app: the page at /, the results under FILES_ROUTE (O/runs/ only)."""
  import fastapi  # pylint: disable=g-import-not-at-top
  import gradio as gr  # pylint: disable=g-import-not-at-top
  from fastapi.staticfiles import StaticFiles  # pylint: disable=g-import-not-at-top

  os.makedirs(studio.results_dir, exist_ok=True)
  app = fastapi.FastAPI()
  app.mount(FILES_ROUTE, StaticFiles(directory=studio.results_dir), name="studio-files")
  page = build(studio)
  page.queue(default_concurrency_limit=1)  # one request at a time; the rest wait in line
  theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["monospace"])
  return gr.mount_gradio_app(app, page, path="", theme=theme, css=CSS, footer_links=[])


def prepare_environment(out_dir: str) -> None:
  """Before Gradio is imported: its uploads go to O/uploads, and it reports nothing."""
  os.environ["GRADIO_TEMP_DIR"] = os.path.join(os.path.abspath(out_dir), "uploads")
  os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
  os.environ.setdefault("MPLCONFIGDIR", os.path.join(os.path.abspath(out_dir), ".matplotlib"))


def require_gradio() -> None:
  try:
    import gradio  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError as e:
    raise ImportError("the studio needs Gradio: pip install 'musicgen-jax[studio]'") from e


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  flags.DEFINE_string("out_dir", "studio_out", "Folder for everything the studio writes "
                      "(results in runs/, uploads in uploads/).", flag_values=flag_values)
  flags.DEFINE_string("runs_dir", None, "Also list the trained workdirs under this folder.",
                      flag_values=flag_values)
  flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (0.0.0.0: every interface; "
                      "only where you mean to share it).", flag_values=flag_values)
  flags.DEFINE_integer("port", DEFAULT_PORT, "Port to listen on.", lower_bound=1,
                       upper_bound=65535, flag_values=flag_values)
  flags.DEFINE_enum("audio", None, ["ogg", "wav", "flac", "none"], "Audio format of the "
                    "results (default: ogg when the audio extra is installed).",
                    flag_values=flag_values)
  flags.DEFINE_string("soundfont", None, "SoundFont (.sf2/.sf3) for the audio (default: an "
                      "installed General MIDI one).", flag_values=flag_values)


def main(flag_values: flags.FlagValues) -> None:
  if flag_values.runs_dir and not os.path.isdir(flag_values.runs_dir):
    raise cli.UsageError(f"--runs_dir={flag_values.runs_dir} is not a folder")
  prepare_environment(flag_values.out_dir)
  require_gradio()
  import uvicorn  # pylint: disable=g-import-not-at-top
  studio = core.Studio(flag_values.out_dir, flag_values.runs_dir, audio=flag_values.audio,
                       soundfont=flag_values.soundfont)
  app = make_app(studio)
  print(f"musicgen-jax studio: http://{flag_values.host}:{flag_values.port}/ "
        f"({len(studio.models())} models; writing to {studio.out_dir})", flush=True)
  uvicorn.run(app, host=flag_values.host, port=flag_values.port, log_level="warning")


def run():
  cli.run(main, define_flags)
