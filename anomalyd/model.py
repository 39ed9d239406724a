"""The recurrent window models, as plain torch: an autoencoder and a forecaster.

Both read a window (B, T, F) of normalised values and say how unusual it is as a squared
error per feature (B, F); the mean over features is the score, the per-feature errors say
which feature was unusual. With ``normalise_errors`` each feature's error is first divided by
its typical error (the ``error_scale`` buffer, measured live: :mod:`anomalyd.scaling`).

- :class:`Autoencoder` (``detector: autoencoder``): the encoder keeps its last hidden state
  as the code; the decoder unrolls that code back over T steps and a linear head maps each
  step to F features. The error is the reconstruction's, averaged over the window (Malhotra
  et al., "LSTM-based Encoder-Decoder for Multi-sensor Anomaly Detection", 2016).
- :class:`Forecaster` (``detector: forecaster``): one recurrent pass predicts each value from
  those before it; the error is the newest value's prediction error (Hundman et al.,
  "Detecting Spacecraft Anomalies Using LSTMs and Nonparametric Dynamic Thresholding", KDD
  2018). Half the work of the autoencoder per window, and a surprise counts in full the
  moment it arrives instead of being averaged into the window.
- :class:`Ensemble` (``model.members`` > 1): that many networks of one kind, initialised apart
  and trained on the same batches; the error is the mean of theirs.

>>> args = ModelArgs(n_features=2, window_length=16, hidden_size=8)
>>> model = build_model(args)
>>> x = torch.zeros(4, 16, 2)
>>> tuple(model(x).shape)
(4, 16, 2)
>>> scores, per_feature = window_errors(model, x)
>>> tuple(scores.shape), tuple(per_feature.shape)
((4,), (4, 2))
>>> forecaster = build_model(ModelArgs(n_features=2, window_length=16, kind="forecaster"))
>>> tuple(forecaster(x).shape), tuple(window_errors(forecaster, x)[1].shape)
((4, 15, 2), (4, 2))
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, cast

import torch
from torch import nn

Cell = Literal["lstm", "gru", "rnn"]
Kind = Literal["autoencoder", "forecaster"]
_CELLS: dict[str, Any] = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}  # plain RNN: tanh


@dataclass(frozen=True)
class ModelArgs:
    """Everything needed to rebuild the network; stored in every checkpoint."""

    n_features: int
    window_length: int
    hidden_size: int = 32
    num_layers: int = 1
    cell: Cell = "lstm"
    dropout: float = 0.0
    kind: Kind = "autoencoder"
    score_steps: int = 1  # forecaster: the score averages the newest values' errors
    normalise_errors: bool = False  # each feature's error over its typical one (anomalyd.scaling)
    members: int = 1  # > 1: that many networks of this kind, their errors averaged (Ensemble)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class WindowModel(nn.Module):
    """What the detector and the trainer need of a model: a training loss and, per window,
    the squared error of each feature."""

    args: ModelArgs
    error_scale: torch.Tensor  # (F,) with ``normalise_errors``; NaN until measured

    def _register_error_scale(self) -> None:
        """A buffer, so the scale travels in ``state_dict`` (checkpoints, snapshots) with the
        weights it belongs to; absent without ``normalise_errors``, so older checkpoints load.
        NaN until :func:`set_error_scale` sets it: until then errors are left as they are."""
        if self.args.normalise_errors:
            self.register_buffer("error_scale", torch.full((self.args.n_features,), math.nan))

    def relative(self, errors: torch.Tensor) -> torch.Tensor:
        """Squared errors (..., F) as multiples of each feature's typical error, with
        ``normalise_errors`` and a measured scale; else unchanged."""
        if not self.args.normalise_errors:
            return errors
        return errors / torch.nan_to_num(self.error_scale, nan=1.0)

    def _rnn(self, n_inputs: int) -> nn.Module:
        args = self.args
        dropout = args.dropout if args.num_layers > 1 else 0.0
        rnn: nn.Module = _CELLS[args.cell](
            n_inputs, args.hidden_size, args.num_layers, batch_first=True, dropout=dropout
        )
        return rnn

    def _init_weights(self, generator: torch.Generator | None) -> None:
        """Every parameter is set here, from ``generator`` when given: no global RNG state,
        so trainings in several threads stay reproducible."""
        # Orthogonal recurrent weights keep the gradient's norm through time (Saxe et al., 2014);
        # a forget-gate bias of 1 lets LSTMs remember by default (Jozefowicz et al., 2015).
        for rnn in (m for m in self.children() if isinstance(m, nn.RNNBase)):
            for name, param in rnn.named_parameters():
                if "weight_hh" in name:
                    for chunk in param.data.chunk(param.shape[0] // param.shape[1]):
                        nn.init.orthogonal_(chunk, generator=generator)
                elif "weight_ih" in name:
                    nn.init.xavier_uniform_(param.data, generator=generator)
                elif "bias" in name:
                    param.data.zero_()
                    if self.args.cell == "lstm":
                        hidden = self.args.hidden_size
                        param.data[hidden : 2 * hidden] = 0.5  # two biases add up to 1
        head = self.head
        assert isinstance(head, nn.Linear)
        nn.init.xavier_uniform_(head.weight, generator=generator)
        nn.init.zeros_(head.bias)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """The training loss of windows ``x`` (B, T, F), a scalar with grad."""
        raise NotImplementedError

    def errors(self, x: torch.Tensor) -> torch.Tensor:
        """Squared error per window and feature (B, F)."""
        raise NotImplementedError

    def parameter_groups(self) -> list[list[nn.Parameter]]:
        """The parameters whose gradient is clipped as one (an ensemble's members apart)."""
        return [list(self.parameters())]


class Autoencoder(WindowModel):
    def __init__(self, args: ModelArgs, generator: torch.Generator | None = None):
        super().__init__()
        self.args = args
        self.encoder = self._rnn(args.n_features)
        self.decoder = self._rnn(args.hidden_size)
        self.head = nn.Linear(args.hidden_size, args.n_features)
        self._register_error_scale()
        self._init_weights(generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, T, F)
        _, state = self.encoder(x)
        hidden = state[0] if isinstance(state, tuple) else state  # (L, B, H)
        code = hidden[-1]  # (B, H)
        steps = code.unsqueeze(1).expand(-1, x.shape[1], -1)  # (B, T, H)
        # The decoder starts from the encoder's state and unrolls backwards in time: the
        # newest values, freshest in the state, come out first (Malhotra et al., 2016).
        decoded, _ = self.decoder(steps, state)  # (B, T, H), newest step first
        return self.head(decoded).flip(1)  # (B, T, F), oldest step first

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.mse_loss(self(x), x)

    def errors(self, x: torch.Tensor) -> torch.Tensor:
        return (self(x) - x).pow(2).mean(dim=1)


class Forecaster(WindowModel):
    """Predicts each value of a window from the values before it (teacher forcing).

    The first quarter of a window's predictions come from a state that has seen too little
    to predict from; the training loss leaves them out. The score is the squared error of
    the newest value's prediction, or the mean over the newest ``score_steps`` values (a
    one-step error is as noisy as one value; Telemanom smooths its errors likewise).
    """

    def __init__(self, args: ModelArgs, generator: torch.Generator | None = None):
        super().__init__()
        self.args = args
        self.rnn = self._rnn(args.n_features)
        self.head = nn.Linear(args.hidden_size, args.n_features)
        self.burn_in = (args.window_length - 1) // 4
        self._register_error_scale()
        self._init_weights(generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, F) -> (B, T - 1, F): position t predicts x[:, t + 1]."""
        out, _ = self.rnn(x[:, :-1])
        return self.head(out)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        burn = self.burn_in
        return nn.functional.mse_loss(self(x)[:, burn:], x[:, burn + 1 :])

    def errors(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x[:, :-1])
        steps = self.args.score_steps
        return (self.head(out[:, -steps:]) - x[:, -steps:]).pow(2).mean(dim=1)


class Ensemble(WindowModel):
    """``args.members`` networks of one kind, each with its own initial weights, trained on the
    same batches; a window's error is the mean of the members' errors.

    One network's errors carry the accidents of its initialisation: on NAB, the same config
    with seeds 0, 1 and 2 scored 49.4, 37.9 and 41.6. The mean of independently initialised
    networks keeps what they agree on (Lakshminarayanan et al., "Simple and Scalable Predictive
    Uncertainty Estimation using Deep Ensembles", 2017). Each member costs a full forward pass.
    """

    def __init__(self, args: ModelArgs, generator: torch.Generator | None = None):
        super().__init__()
        self.args = args
        single = replace(args, members=1, normalise_errors=False)
        self.members = nn.ModuleList(_build_single(single, generator) for _ in range(args.members))
        self._register_error_scale()

    def nets(self) -> list[WindowModel]:
        """The members, typed (``nn.ModuleList`` holds plain modules)."""
        return [cast(WindowModel, member) for member in self.members]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The members' mean output."""
        return torch.stack([member(x) for member in self.nets()]).mean(dim=0)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """The sum of the members' losses: each member's gradient is the one it would get alone."""
        return torch.stack([member.loss(x) for member in self.nets()]).sum()

    def errors(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([member.errors(x) for member in self.nets()]).mean(dim=0)

    def parameter_groups(self) -> list[list[nn.Parameter]]:
        return [list(member.parameters()) for member in self.nets()]


def _build_single(args: ModelArgs, generator: torch.Generator | None) -> WindowModel:
    return Forecaster(args, generator) if args.kind == "forecaster" else Autoencoder(args, generator)


def build_model(args: ModelArgs, generator: torch.Generator | None = None) -> WindowModel:
    """The model ``args.kind`` names (``args.members`` of them averaged when more than one),
    its weights drawn from ``generator``."""
    if args.members > 1:
        return Ensemble(args, generator)
    return _build_single(args, generator)


def window_errors(model: WindowModel, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores (B,) and per-feature errors (B, F) for windows ``x`` (B, T, F), without grad;
    with ``normalise_errors`` both are relative to each feature's typical error."""
    with torch.inference_mode():
        per_feature = model.relative(model.errors(x))  # (B, F)
    return per_feature.mean(dim=1), per_feature


def set_error_scale(model: WindowModel, typical: torch.Tensor) -> None:
    """Make ``typical`` (F,), each feature's mean squared error on normal data, the model's
    error scale. Floored at a thousandth of the features' mean: a feature the model
    reproduces almost exactly (a constant sensor) weighs at most a thousand others."""
    typical = typical.to(model.error_scale)
    floor = torch.clamp(typical.mean() * 1e-3, min=torch.finfo(typical.dtype).tiny)
    model.error_scale.copy_(torch.maximum(typical, floor))


def mean_feature_errors(model: WindowModel, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Each feature's mean squared error (F,) over windows ``x`` (N, T, F), not normalised."""
    with torch.inference_mode():
        total = torch.zeros(model.args.n_features, device=x.device)
        for start in range(0, len(x), batch_size):
            total += model.errors(x[start : start + batch_size]).sum(dim=0)
    return total / max(len(x), 1)


def transfer_error_scale(new: WindowModel, old: WindowModel, x: torch.Tensor) -> None:
    """Give ``new`` the scale of ``old`` (a live model's, measured on live data), moved by how
    much more or less ``new`` errs per feature on the same windows ``x`` (N, T, F): its
    normalised errors then mean what ``old``'s did, and thresholds need no new calibration.
    An unmeasured (NaN) scale stays unmeasured."""
    ratio = mean_feature_errors(new, x) / mean_feature_errors(old, x).clamp_min(torch.finfo(x.dtype).tiny)
    new.error_scale.copy_(old.error_scale * ratio.to(old.error_scale))


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when torch sees a GPU, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("model.device is 'cuda' but torch sees no CUDA device")
    return torch.device(name)
