"""Energy-based autoencoders of the NYU Deep Learning lecture 08-3, in JAX/Flax.

The package imports nothing: each module is imported where it is used, so that a command pays
only for what it runs (``python -X importtime -m experiments.run --help``).
"""

# The one place the version is written (pyproject.toml reads it); CHANGELOG.md's first entry and
# CITATION.cff name the same one (tests/release_test.py).
__version__ = "0.2.0"
