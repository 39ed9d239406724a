"""The recurrent autoencoder, as plain torch.

The encoder reads a window (B, T, F) and keeps its last hidden state as the code; the
decoder unrolls that code back over T steps and a linear head maps each step to F
features. The squared reconstruction error per feature, averaged over the window, is the
anomaly evidence: the mean over features is the score, the per-feature errors say which
feature was unusual (Malhotra et al., "LSTM-based Encoder-Decoder for Multi-sensor
Anomaly Detection", 2016).

>>> args = AutoencoderArgs(n_features=2, window_length=16, hidden_size=8)
>>> model = Autoencoder(args)
>>> x = torch.zeros(4, 16, 2)
>>> tuple(model(x).shape)
(4, 16, 2)
>>> scores, per_feature = reconstruction_errors(model, x)
>>> tuple(scores.shape), tuple(per_feature.shape)
((4,), (4, 2))
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import nn

Cell = Literal["lstm", "gru", "rnn"]
_CELLS: dict[str, Any] = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}  # plain RNN: tanh


@dataclass(frozen=True)
class AutoencoderArgs:
    """Everything needed to rebuild the network; stored in every checkpoint."""

    n_features: int
    window_length: int
    hidden_size: int = 32
    num_layers: int = 1
    cell: Cell = "lstm"
    dropout: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Autoencoder(nn.Module):
    def __init__(self, args: AutoencoderArgs, generator: torch.Generator | None = None):
        super().__init__()
        self.args = args
        rnn = _CELLS[args.cell]
        dropout = args.dropout if args.num_layers > 1 else 0.0
        H, L = args.hidden_size, args.num_layers
        self.encoder = rnn(args.n_features, H, L, batch_first=True, dropout=dropout)
        self.decoder = rnn(H, H, L, batch_first=True, dropout=dropout)
        self.head = nn.Linear(args.hidden_size, args.n_features)
        self._init_weights(generator)

    def _init_weights(self, generator: torch.Generator | None) -> None:
        """Every parameter is set here, from ``generator`` when given: no global RNG state,
        so trainings in several threads stay reproducible."""
        # Orthogonal recurrent weights keep the gradient's norm through time (Saxe et al., 2014);
        # a forget-gate bias of 1 lets LSTMs remember by default (Jozefowicz et al., 2015).
        for rnn in (self.encoder, self.decoder):
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
        nn.init.xavier_uniform_(self.head.weight, generator=generator)
        nn.init.zeros_(self.head.bias)

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


def reconstruction_errors(model: Autoencoder, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores (B,) and per-feature errors (B, F) for windows ``x`` (B, T, F), without grad."""
    with torch.inference_mode():
        per_feature = (model(x) - x).pow(2).mean(dim=1)  # (B, F)
    return per_feature.mean(dim=1), per_feature


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when torch sees a GPU, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("model.device is 'cuda' but torch sees no CUDA device")
    return torch.device(name)
