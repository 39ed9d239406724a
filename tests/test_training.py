"""Training's budgets: a step budget, early stopping on the held-back loss, warm starts."""

import numpy as np
import torch

from anomalyd.config import TrainingConfig
from anomalyd.model import ModelArgs, build_model
from anomalyd.pipeline import Pipeline
from anomalyd.training import fit

from .helpers import batches, sine_events, small_config

ARGS = ModelArgs(n_features=1, window_length=16, hidden_size=8)
CPU = torch.device("cpu")


def sine_windows(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None] + np.arange(16)[None, :]
    return (np.sin(2 * np.pi * t / 24) + rng.normal(0, 0.05, t.shape)).astype(np.float32)[..., None]


def weights(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_the_step_budget_caps_optimizer_steps(monkeypatch):
    taken = []
    step = torch.optim.Adam.step
    monkeypatch.setattr(
        torch.optim.Adam, "step", lambda self, *a, **k: taken.append(1) or step(self, *a, **k)
    )
    config = TrainingConfig(
        epochs=10, batch_size=16, patience=None
    )  # 180 training windows: 12 steps an epoch
    _, report = fit(ARGS, sine_windows(200), config, 0, CPU, max_steps=17)
    assert len(taken) == report.steps == 17
    assert report.epochs == 2  # the budget ran out in the second epoch
    taken.clear()
    _, report = fit(ARGS, sine_windows(200), config, 0, CPU)
    assert len(taken) == report.steps == 120


def test_early_stopping_keeps_the_best_epoch():
    # A large step size: the held-back loss soon stops improving.
    config = TrainingConfig(epochs=40, batch_size=16, learning_rate=0.05, patience=2)
    windows = sine_windows(200)
    _, stopped = fit(ARGS, windows, config, 0, CPU)
    assert stopped.epochs < 40
    # The same seed without patience, for as many epochs, ends on the last epoch's weights,
    # which were not better than the best (that is why training stopped).
    plain = TrainingConfig(epochs=stopped.epochs, batch_size=16, learning_rate=0.05, patience=None)
    _, last = fit(ARGS, windows, plain, 0, CPU)
    assert stopped.validation_loss <= last.validation_loss


def test_a_warm_start_begins_from_the_given_weights():
    live, _ = fit(ARGS, sine_windows(200), TrainingConfig(epochs=3, batch_size=16), 0, CPU)
    tiny = TrainingConfig(epochs=1, batch_size=16, learning_rate=1e-7)
    warm, _ = fit(ARGS, sine_windows(200, seed=1), tiny, 5, CPU, start=live, max_steps=1)
    cold, _ = fit(ARGS, sine_windows(200, seed=1), tiny, 5, CPU, max_steps=1)
    torch.testing.assert_close(weights(warm), weights(live), atol=1e-5, rtol=0)
    fresh = weights(build_model(ARGS, torch.Generator().manual_seed(5)))
    torch.testing.assert_close(weights(cold), fresh, atol=1e-5, rtol=0)
    assert not torch.allclose(weights(cold), weights(live), atol=1e-3)


def test_retraining_warm_starts_from_the_live_model():
    """A candidate trained with a negligible step size is the live model at its trigger."""
    retraining = {"every_events": 120, "on_drift": False, "min_windows": 50, "swap_after_events": 20,
                  "warm_start": True, "max_steps": 2, "tolerance": 10.0}  # fmt: skip
    pipeline = Pipeline(small_config(retraining=retraining, training={"learning_rate": 1e-7}))
    live = []
    for batch in batches(sine_events("k", 450), 10):
        before = pipeline.detector.slots.get("k")
        weights_before = None if before is None or before.model is None else weights(before.model)
        result = pipeline.process(batch)
        if result.retrained:
            live.append((weights_before, weights(pipeline.detector.slots["k"].model)))
    pipeline.close()
    assert live and all(o is not None for o, _ in live)
    for old, new in live:
        torch.testing.assert_close(new, old, atol=1e-5, rtol=0)
