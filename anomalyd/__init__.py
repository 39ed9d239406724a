"""anomalyd: streaming anomaly detection with recurrent autoencoders.

The library API under the CLI::

    from anomalyd import load_config, replay, ReplayOutputs
    stats = replay(["data.csv"], load_config("config/nab.yaml"), ReplayOutputs(scores=Path("s.csv")))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Config", "Pipeline", "ReplayOutputs", "__version__", "load_config", "replay"]

if TYPE_CHECKING:
    from anomalyd.app import ReplayOutputs, replay
    from anomalyd.config import Config, load_config
    from anomalyd.pipeline import Pipeline


def __getattr__(name: str) -> Any:
    # Lazy, so `anomalyd --version` and `config check` do not pay for importing torch.
    if name in ("replay", "ReplayOutputs"):
        from anomalyd import app

        return getattr(app, name)
    if name in ("Config", "load_config"):
        from anomalyd import config

        return getattr(config, name)
    if name == "Pipeline":
        from anomalyd.pipeline import Pipeline

        return Pipeline
    raise AttributeError(name)
