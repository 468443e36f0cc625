"""The study's TF-Keras-2 Nadam (nadam_schedule.py): with Keras 3's schedule it is Keras 3's Nadam, and its
slow warm-up is what makes it differ. The test lives with the study: `python -m bench clear --yes` removes both."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import keras
import numpy as np
import pytest


def _nadam_schedule_module():
    path = Path(__file__).resolve().parent / "nadam_schedule.py"
    spec = importlib.util.spec_from_file_location("nadam_schedule", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _weights_after_eight_steps(optimizer):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(optimizer, "mse")
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 4), dtype=np.float32), rng.random((64, 3), dtype=np.float32)
    model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)  # 4 batches an epoch
    return model.get_weights()


def test_tf_keras_2_nadam_of_the_study_matches_keras_3_without_the_slow_warm_up(monkeypatch):
    study = _nadam_schedule_module()
    keras3 = _weights_after_eight_steps(keras.optimizers.Nadam(0.01))
    monkeypatch.setattr(study, "TF_KERAS_2_SCHEDULE_DECAY", 1.0)  # 0.96 ** (1 * t): Keras 3's schedule
    same_schedule = _weights_after_eight_steps(study.TfKeras2Nadam(0.01))
    for ours, theirs in zip(same_schedule, keras3):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    monkeypatch.setattr(study, "TF_KERAS_2_SCHEDULE_DECAY", 0.004)
    slow_warm_up = _weights_after_eight_steps(study.TfKeras2Nadam(0.01))
    assert not np.allclose(slow_warm_up[0], keras3[0], atol=1e-6)
    momentum = study.TfKeras2Nadam(0.01).momentum_at(1.0, "float32")
    assert float(keras.ops.convert_to_numpy(momentum)) == pytest.approx(0.9 * (1 - 0.5 * 0.96 ** 0.004))
