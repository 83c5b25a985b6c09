"""python -m musicgen_jax.studio: the studio's server (see `musicgen_jax.studio.app`)."""

from musicgen_jax.studio.app import run

if __name__ == "__main__":
  run()
