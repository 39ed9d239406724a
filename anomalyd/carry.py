"""The forecaster's streaming mode (``model.carry_state``): one recurrent step per event.

In window mode every scored window is read from a zero state: T - 1 recurrent steps per
event. With a carried state each key keeps its forecaster's state after its newest value, so
scoring an event is one step: predict it from the state, then read it. A state belongs to
one model version: after a training, a promotion, a rollback or a restore from elsewhere the
key's next event primes it again from the T - 1 values before that event, which is exactly
the window mode's computation for it.

>>> import torch
>>> from anomalyd.model import ModelArgs, build_model, window_errors
>>> model = build_model(ModelArgs(1, 8, 4, kind="forecaster"), torch.Generator().manual_seed(0)).eval()
>>> windows = np.random.default_rng(0).normal(size=(1, 8, 1)).astype(np.float32)
>>> states = CarriedStates(model.args)
>>> scores, _ = states.score(model, 1, windows, np.array([0]))
>>> bool(np.allclose(scores, window_errors(model, torch.from_numpy(windows))[0].numpy()))
True
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from anomalyd.model import ModelArgs, WindowModel
from anomalyd.windows import key_runs


class CarriedStates:
    """Per key (its row in :class:`~anomalyd.windows.WindowStore`), the recurrent state after
    the key's newest scored value and the model version that state belongs to."""

    def __init__(self, args: ModelArgs):
        self.lstm = args.cell == "lstm"
        self.shape = (args.num_layers, args.hidden_size)
        self.h = torch.zeros((0, *self.shape))
        self.c = torch.zeros((0, *self.shape))
        self.version = np.full(0, -1, dtype=np.int64)  # -1: no state

    def _ensure(self, n: int) -> None:
        if n <= len(self.version):
            return
        more = max(n, 2 * len(self.version), 16) - len(self.version)
        self.h = torch.cat([self.h, torch.zeros((more, *self.shape))])
        if self.lstm:
            self.c = torch.cat([self.c, torch.zeros((more, *self.shape))])
        self.version = np.concatenate([self.version, np.full(more, -1, dtype=np.int64)])

    def reset(self, keys: list[int]) -> None:
        """Forget the states of ``keys``: their next event primes a new one."""
        known = [k for k in keys if k < len(self.version)]
        self.version[known] = -1

    def _state(self, keys: np.ndarray, device: torch.device) -> Any:
        h = self.h[keys].transpose(0, 1).contiguous().to(device)  # (L, K, H)
        return (h, self.c[keys].transpose(0, 1).contiguous().to(device)) if self.lstm else h

    def _put(self, keys: np.ndarray, state: Any) -> None:
        h = state[0] if self.lstm else state
        self.h[keys] = h.transpose(0, 1).cpu()
        if self.lstm:
            self.c[keys] = state[1].transpose(0, 1).cpu()

    def score(
        self, model: WindowModel, version: int, windows: np.ndarray, keys: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores (N,) and per-feature errors (N, F) of the newest value of each window
        (N, T, F), in stream order, ``keys`` (N,) their keys' rows; each key's state moves on."""
        n, F = len(keys), windows.shape[2]
        self._ensure(int(keys.max()) + 1)
        order, uniq, first, runs, owner, rank = key_runs(keys)  # each key's events, in order
        device = next(model.parameters()).device
        rnn, head = model.rnn, model.head
        assert isinstance(rnn, torch.nn.RNNBase) and isinstance(head, torch.nn.Linear)
        with torch.inference_mode():
            stale = self.version[uniq] != version
            if stale.any():  # primed from the T - 1 values before the key's first event here
                before = np.ascontiguousarray(windows[order[first[stale]], :-1], dtype=np.float32)
                _, state = rnn(torch.from_numpy(before).to(device))
                self._put(uniq[stale], state)
            state = self._state(uniq, device)
            values = np.zeros((len(uniq), int(runs.max()), F), dtype=np.float32)
            values[owner, rank] = windows[order, -1]
            x = torch.from_numpy(values).to(device)
            lengths = torch.from_numpy(runs.astype(np.int64))
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            out, after = rnn(packed, state)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
            top = (state[0] if self.lstm else state)[-1]  # (K, H): the newest layer's state
            hidden = torch.cat([top.unsqueeze(1), out[:, :-1]], dim=1)  # before each value
            errors = model.relative((head(hidden) - x).pow(2)).cpu().numpy()  # (K, run, F)
            self._put(uniq, after)
        self.version[uniq] = version
        per_feature = np.empty((n, F), dtype=np.float32)
        per_feature[order] = errors[owner, rank]
        return per_feature.mean(axis=1), per_feature

    def get_state(self) -> dict[str, Any]:
        """The states that belong to a model version, as arrays (for snapshots)."""
        keys = np.flatnonzero(self.version >= 0)
        return {
            "keys": keys,
            "version": self.version[keys].copy(),
            "h": self.h[keys].numpy().copy(),
            "c": self.c[keys].numpy().copy() if self.lstm else None,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        keys = np.asarray(state["keys"], dtype=np.int64)
        if len(keys) == 0:
            return
        self._ensure(int(keys.max()) + 1)
        self.h[keys] = torch.as_tensor(np.asarray(state["h"], dtype=np.float32))
        if self.lstm:
            self.c[keys] = torch.as_tensor(np.asarray(state["c"], dtype=np.float32))
        self.version[keys] = np.asarray(state["version"], dtype=np.int64)
