"""bench: a parameter-budget benchmark leaderboard for Keras models.

The package reads as the data's path, one module per stage:
discover -> data -> train (in a worker subprocess) -> results -> leaderboard,
with `runner` orchestrating the subprocesses and `cli` parsing commands.
"""

__version__ = "0.1.0"

# Bump when a change alters what a training run produces: it is part of every
# cache key, so records made by an older protocol are retrained.
PROTOCOL_VERSION = "1"

# Bump when a change to bench/engine.py alters what it trains (a loss, a gradient, a callback's view): it joins
# the cache key of runs under `engine = "auto"` only, so their records are retrained and model.fit's are not.
ENGINE_VERSION = "2"
