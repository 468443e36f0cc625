"""Packages a stage process keeps out of TensorFlow's start-up.

`import keras` on TensorFlow also imports what its optional features use when it is installed: scikit-learn (the
`keras.wrappers` estimators), pandas (data frames as fit's input), matplotlib, and JAX (TensorFlow Lite's JAX
converter). None of them is used to train or run an entry's model here, and together they are about a second of
every stage process's start-up: `python -X importtime -c "import keras"` showed sklearn 0.56 s, jax 0.48 s, scipy.stats
(through sklearn) 0.39 s and pandas 0.33 s; `import keras` took 2.9 s instead of 4.0 s without them (both 2026-12-04,
2-core AMD EPYC). Keras and TensorFlow import each inside `try`/`except ImportError` and carry on without it.
"""

from __future__ import annotations

import contextlib
import sys

UNUSED_BY_KERAS_MODELS = ("sklearn", "matplotlib", "pandas", "jax", "jaxlib")


class Unimportable:
    """An import hook (for `sys.meta_path`) that makes the packages `names` and their submodules unimportable."""

    def __init__(self, names: tuple[str, ...]):
        self.names = names

    def find_spec(self, name, path=None, target=None):
        if any(name == blocked or name.startswith(blocked + ".") for blocked in self.names):
            raise ImportError(f"this process runs without {name} (bench.imports)")
        return None


@contextlib.contextmanager
def left_out(names: tuple[str, ...] = UNUSED_BY_KERAS_MODELS):
    """Within the block, importing `names` raises ImportError; afterwards they import as usual (the entry's own code
    may use them, and bench.engine imports JAX). Packages already imported are not affected."""
    hook = Unimportable(names)
    sys.meta_path.insert(0, hook)
    try:
        yield
    finally:
        sys.meta_path.remove(hook)
