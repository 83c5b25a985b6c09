"""musicgen-jax: symbolic music generation with JAX and Flax."""

from musicgen_jax.encoding import DURATION_INDEX, FRAME_DIM, LOWEST_PITCH, NUM_NOTES

__version__ = "0.1.0"
