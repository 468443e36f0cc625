"""bench: a parameter-budget benchmark leaderboard for Keras models.

The package reads as the data's path, one module per stage:
discover (entries) -> plan (which runs) -> stages (the contained subprocesses) -> train (the entry's code, sandboxed)
-> audit (rebuild or graph_audit, then predict; sandboxed, trusted) -> received and score (the runner's checks and
numbers) -> runner (store the records) -> leaderboard and site (render), with `cli` on top parsing commands and
nothing importing it.
"""

__version__ = "0.1.0"

# Bump when a change alters what a training run produces: it is part of every
# cache key, so records made by an older protocol are retrained.
PROTOCOL_VERSION = "1"

# Bump when a change to bench/engine.py or bench/engine_layers.py alters what it trains (a loss, a gradient, a callback's view): it joins
# the cache key of runs under `engine = "auto"` or `"jax"` only, so their records are retrained and model.fit's are not.
ENGINE_VERSION = "2"
