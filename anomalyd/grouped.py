"""Many same-shaped LSTM networks scored as one batched operation.

An ensemble's members, or the per-key models of many keys, are networks of one shape with
their own weights. Scored one by one, each costs a forward pass of its own: on a GPU that is
a few kernel launches per time step per network, whatever the batch. Here their weights are
stacked, ``(G, ...)``, and every time step is one batched matrix product (``torch.baddbmm``)
over all of them, the gates as ``nn.LSTM`` computes them (Hochreiter and Schmidhuber, 1997;
gate order i, f, g, o). Single-layer LSTM autoencoders and forecasters only; other shapes
are scored one network at a time.

>>> from anomalyd.model import ModelArgs, build_model
>>> args = ModelArgs(n_features=2, window_length=16, hidden_size=8, members=3)
>>> model = build_model(args)
>>> x = torch.randn(5, 16, 2)
>>> grouped = GroupedNets.of([model])
>>> torch.allclose(grouped.model_errors(x.unsqueeze(0))[0], model.errors(x), atol=1e-5)
True
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from anomalyd.model import Autoencoder, Ensemble, Forecaster, WindowModel


def groupable(model: WindowModel) -> bool:
    """Whether :class:`GroupedNets` can score ``model``: single-layer LSTM networks."""
    args = model.args
    return args.cell == "lstm" and args.num_layers == 1


def members(model: WindowModel) -> list[WindowModel]:
    return model.nets() if isinstance(model, Ensemble) else [model]


def _param(module: nn.Module, name: str) -> torch.Tensor:
    value = getattr(module, name)
    assert isinstance(value, torch.Tensor)
    return value.detach()


class _Stacked:
    """One LSTM's weights over G networks: input and recurrent weights transposed for bmm."""

    def __init__(self, rnns: list[nn.Module]):
        self.w_ih = torch.stack([_param(r, "weight_ih_l0").t() for r in rnns])  # (G, I, 4H)
        self.w_hh = torch.stack([_param(r, "weight_hh_l0").t() for r in rnns])  # (G, H, 4H)
        biases = [_param(r, "bias_ih_l0") + _param(r, "bias_hh_l0") for r in rnns]
        self.bias = torch.stack(biases).unsqueeze(1)  # (G, 1, 4H)

    def run(
        self, inputs: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """inputs (G, B, T, I) -> outputs (G, B, T, H) and the last (h, c), each (G, B, H)."""
        g, b, t, i = inputs.shape
        hidden = self.w_hh.shape[1]
        projected = torch.baddbmm(self.bias, inputs.reshape(g, b * t, i), self.w_ih)  # (G, B*T, 4H)
        projected = projected.reshape(g, b, t, 4 * hidden).transpose(1, 2).contiguous()  # (G, T, B, 4H)
        if state is None:
            zeros = inputs.new_zeros(g, b, hidden)
            state = (zeros, zeros)
        h, c = state
        outputs = []
        for step in range(t):
            gates = torch.baddbmm(projected[:, step], h, self.w_hh)  # (G, B, 4H)
            i_gate, f_gate, g_gate, o_gate = gates.chunk(4, dim=-1)
            c = torch.sigmoid(f_gate) * c + torch.sigmoid(i_gate) * torch.tanh(g_gate)
            h = torch.sigmoid(o_gate) * torch.tanh(c)
            outputs.append(h)
        return torch.stack(outputs, dim=2), (h, c)


class GroupedNets:
    """The networks of some models, stacked: ``model_errors`` scores windows (M, B, T, F),
    row m under model m, each model's error the mean over its members (as the model's own)."""

    def __init__(self, nets: list[WindowModel], per_model: int):
        self.kind = nets[0].args.kind
        self.per_model = per_model  # networks per model (an ensemble's members)
        if self.kind == "autoencoder":
            aes = [n for n in nets if isinstance(n, Autoencoder)]
            self.encoder = _Stacked([n.encoder for n in aes])
            self.decoder: _Stacked | None = _Stacked([n.decoder for n in aes])
        else:
            fcs = [n for n in nets if isinstance(n, Forecaster)]
            self.encoder, self.decoder = _Stacked([n.rnn for n in fcs]), None
            self.score_steps = fcs[0].args.score_steps
        heads = [cast(nn.Module, n.head) for n in nets]
        self.head_w = torch.stack([_param(h, "weight").t() for h in heads])  # (G, H, F)
        self.head_b = torch.stack([_param(h, "bias") for h in heads]).unsqueeze(1)  # (G, 1, F)

    @classmethod
    def of(cls, models: list[WindowModel]) -> GroupedNets:
        """The networks of ``models`` (all of one shape and kind), in order."""
        nets = [net for model in models for net in members(model)]
        return cls(nets, len(nets) // len(models))

    def _head(self, h: torch.Tensor) -> torch.Tensor:
        g, b, t, hidden = h.shape
        return torch.baddbmm(self.head_b, h.reshape(g, b * t, hidden), self.head_w).reshape(g, b, t, -1)

    def net_errors(self, x: torch.Tensor) -> torch.Tensor:
        """x (G, B, T, F), row g for network g -> squared errors (G, B, F), as ``errors``."""
        if self.decoder is not None:
            _, (h, c) = self.encoder.run(x)
            steps = h.unsqueeze(2).expand(-1, -1, x.shape[2], -1)  # (G, B, T, H): the code each step
            decoded, _ = self.decoder.run(steps, (h, c))
            return (self._head(decoded).flip(2) - x).pow(2).mean(dim=2)
        out, _ = self.encoder.run(x[:, :, :-1])
        newest = self.score_steps
        return (self._head(out[:, :, -newest:]) - x[:, :, -newest:]).pow(2).mean(dim=2)

    def model_errors(self, x: torch.Tensor) -> torch.Tensor:
        """x (M, B, T, F), row m for model m -> each model's squared errors (M, B, F)."""
        m, b, t, f = x.shape
        k = self.per_model
        every = x.unsqueeze(1).expand(m, k, b, t, f).reshape(m * k, b, t, f)
        return self.net_errors(every).reshape(m, k, b, f).mean(dim=1)


class GroupedScorer:
    """Scores the windows of several models in one batched pass, the stacked weights kept
    while the models stay the same (stacking a thousand models' weights costs more than
    scoring them)."""

    def __init__(self) -> None:
        self._models: tuple[int, ...] = ()
        self._nets: GroupedNets | None = None

    def _stacked(self, models: list[WindowModel]) -> GroupedNets:
        ids = tuple(id(model) for model in models)
        if self._nets is None or ids != self._models:
            self._nets, self._models = GroupedNets.of(models), ids
        return self._nets

    def errors(self, models: list[WindowModel], windows: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each model's squared errors (n_m, F) of its windows (n_m, T, F), relative to its
        error scale as :func:`anomalyd.model.window_errors` makes them; one batched pass,
        the models' windows padded to the longest."""
        longest = max(len(w) for w in windows)
        first = windows[0]
        padded = first.new_zeros((len(windows), longest, *first.shape[1:]))  # (M, B, T, F)
        for row, part in enumerate(windows):
            padded[row, : len(part)] = part
        with torch.inference_mode():
            errors = self._stacked(models).model_errors(padded)  # (M, B, F)
            return [
                m.relative(errors[row, : len(w)])
                for row, (m, w) in enumerate(zip(models, windows, strict=True))
            ]
