"""A studio in the browser: pick a model, give a prime, generate, listen and download.

    python -m musicgen_jax.studio [--runs_dir=runs] [--out_dir=studio_out] [--port=7860]

`core` does the work and is usable without a browser (`Studio`, `Request`); `app` is the
Gradio page and the server (the `studio` extra).
"""

from musicgen_jax.studio.core import (ModelEntry, Request, Result, Studio, StudioError,
                                      list_models)

__all__ = ["ModelEntry", "Request", "Result", "Studio", "StudioError", "list_models"]
