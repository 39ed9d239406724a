"""Score batches of windows with the right model; keep learning from normal windows.

With ``scope: per_key`` every key has a model of its own; with ``shared`` all keys use one
model (each key still normalised on its own). Models are addressed by a model id: the
key itself, or ``""`` for the shared model.

Retraining (see :class:`~anomalyd.config.RetrainingConfig`) runs in a worker thread on a
copy of the model's buffer of recent normal windows; the live model keeps scoring. The
candidate is judged and swapped in at a fixed count of scored windows, so the outcome does
not depend on how fast the machine trained it.
"""

from __future__ import annotations

import copy
import itertools
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from anomalyd.carry import CarriedStates
from anomalyd.config import Config, ModelConfig, RetrainingConfig, TrainingConfig
from anomalyd.grouped import GroupedScorer
from anomalyd.model import Ensemble, Kind, ModelArgs, WindowModel, build_model, resolve_device, window_errors
from anomalyd.retraining import DriftMonitor, RetrainJob, RetrainOutcome
from anomalyd.scaling import ScaleMeasurement, hand_over_scale
from anomalyd.training import FitReport, challenge, fit

SHARED = ""
_MIN_PART = 64  # windows: below this a part costs more in thread hand-offs than it saves
_CPU_GROUPED = 2  # windows per model at most for a stacked pass on a CPU (bench/batched_networks.py)


@dataclass
class ModelSlot:
    """One model, what it learns from (the newest normal windows, tagged with their key) and
    its retraining state."""

    model: WindowModel | None = None
    version: int = 0
    buffer: deque[tuple[int, np.ndarray]] = field(default_factory=deque)
    last_report: FitReport | None = None
    scored: int = 0
    since_training: int = 0
    trained_at: float = 0.0
    drift: DriftMonitor | None = None
    drifted: bool = False
    job: RetrainJob | None = None
    carried: CarriedStates | None = None  # ``model.carry_state``: each key's forecaster state
    measuring: ScaleMeasurement | None = None  # ``model.normalise_errors``: until the scale is set
    cancel: threading.Event | None = None  # set to stop the retraining in flight (``job``)


class _JobCancel(threading.Event):
    """One retraining's stop flag, also set when the whole detector closes."""

    def __init__(self, closing: threading.Event):
        super().__init__()
        self.closing = closing

    def is_set(self) -> bool:
        return super().is_set() or self.closing.is_set()


class Detector:
    """Batched scoring (one forward pass per model per batch) and training of the window models
    (``kind``: autoencoders or forecasters)."""

    def __init__(
        self,
        model: ModelConfig,
        training: TrainingConfig,
        n_features: int,
        window_length: int,
        retraining: RetrainingConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        kind: Kind = "autoencoder",
    ):
        self.config = model
        self.training = training
        self.retraining = retraining or RetrainingConfig(enabled=False)
        self.clock = clock
        self.args = ModelArgs(
            n_features=n_features,
            window_length=window_length,
            hidden_size=model.hidden_size,
            num_layers=model.num_layers,
            cell=model.cell,
            dropout=model.dropout,
            kind=kind,
            score_steps=model.score_steps,
            normalise_errors=model.normalise_errors,
            members=model.members,
        )
        self.device = resolve_device(model.device)
        # Scoring threads, each with one torch thread, each scoring its own part of a batch:
        # small recurrent nets gain little from torch's intra-op threads (1.1-1.2x on two
        # cores) and nearly double with two parts in two threads (torch frees the GIL).
        self.workers = 1 if model.threads is None or self.device.type != "cpu" else model.threads
        if model.threads is not None:
            # Explicit, so that several processes on one host do not oversubscribe the cores
            # (OpenMP workers spin; two processes of two threads each on two cores crawl).
            torch.set_num_threads(1 if self.device.type == "cpu" else model.threads)
        self.slots: dict[str, ModelSlot] = {}
        self.grouped = GroupedScorer() if self._groups_networks() else None
        self._scorers: ThreadPoolExecutor | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._cancel = threading.Event()

    def _groups_networks(self) -> bool:
        """Whether ``model.group_networks`` may stack this shape of network at all."""
        setting, args = self.config.group_networks, self.args
        return (
            setting != "off" and not self.config.carry_state and args.cell == "lstm" and args.num_layers == 1
        )

    def _stacks(self, windows: int, models: int) -> bool:
        """``auto`` on a GPU, or ``on``: always. ``on`` on a CPU: only for models with at most
        ``_CPU_GROUPED`` windows each, where torch's LSTM kernel costs more in per-call overhead
        than the stacked pass's Python loop over time steps. Not ``auto`` on a CPU: whether a
        batch is stacked would depend on how a source cut the batches, and its float rounding
        with it."""
        if self.grouped is None or (self.config.group_networks == "auto" and self.device.type != "cuda"):
            return False
        return self.device.type == "cuda" or windows <= _CPU_GROUPED * models

    def model_id(self, key: str) -> str:
        return key if self.config.scope == "per_key" else SHARED

    def slot(self, model_id: str) -> ModelSlot:
        slot = self.slots.get(model_id)
        if slot is None:
            slot = self.slots[model_id] = ModelSlot(buffer=deque(maxlen=self.training.max_windows))
            if self.config.carry_state:
                slot.carried = CarriedStates(self.args)
        return slot

    def remember(self, model_id: str, key_index: int, window: np.ndarray) -> None:
        """Keep a copy of a normal window for the next training of ``model_id``."""
        self.slot(model_id).buffer.append((key_index, window.copy()))

    def train(self, model_id: str) -> FitReport:
        """Fit the first model on the slot's buffer (blocking) and make it live as version 1."""
        slot = self.slot(model_id)
        windows = np.stack([w for _, w in slot.buffer])
        seed = self.config.seed + slot.version
        scoring_threads = torch.get_num_threads()
        torch.set_num_threads(self.training.threads)
        try:
            slot.model, slot.last_report = fit(
                self.args, windows, self.training, seed, self.device, max_steps=self.training.max_steps
            )
        finally:
            torch.set_num_threads(scoring_threads)
        slot.version += 1
        slot.measuring = ScaleMeasurement() if self.args.normalise_errors else None
        self._reset_schedule(slot)
        return slot.last_report

    def measure(
        self, model_id: str, key_index: int, errors: np.ndarray, needed: int
    ) -> list[tuple[int, float]] | None:
        """Count a live window's raw per-feature errors (F,) towards the model's error scale
        (:mod:`anomalyd.scaling`); the ``needed``-th sets it and returns each counted
        window's key and score under it."""
        slot = self.slots[model_id]
        assert slot.measuring is not None and slot.model is not None
        measured = slot.measuring.add(key_index, errors, needed, slot.model)
        if measured is not None:
            slot.measuring = None
        return measured

    def error_scale(self, model_id: str) -> np.ndarray:
        """The model's error scale (F,): NaN while it is measured."""
        model = self.slots[model_id].model
        assert model is not None
        return np.asarray(model.error_scale.cpu().numpy(), dtype=np.float64)

    def hand_over_scale(self, model_id: str, model: WindowModel, windows: np.ndarray | None) -> None:
        """Give ``model``, about to replace the live one (a rollback), the live one's error scale."""
        live = self.slots[model_id].model
        assert live is not None
        hand_over_scale(live, model, windows, self.device)

    def score(
        self, model_id: str, windows: np.ndarray, keys: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores (N,) and per-feature errors (N, F) of windows (N, T, F) under ``model_id``.

        ``keys`` (N,), the windows' keys' rows in stream order, says that these are the live
        windows of those keys: with ``model.carry_state`` each is then scored from its key's
        carried state, one recurrent step, and the state moves on. Without it (training and
        calibration windows) every window is read whole.
        """
        slot = self.slots[model_id]
        model = slot.model
        if model is None:
            raise RuntimeError(f"model {model_id!r} has not been trained")
        if keys is not None and slot.carried is not None and len(windows):
            return slot.carried.score(model, slot.version, windows, keys)
        data = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32))  # (N, T, F), no copy
        n = len(windows)
        scores = np.empty(n, dtype=np.float32)
        per_feature = np.empty((n, self.args.n_features), dtype=np.float32)
        size = self.config.score_batch_size

        def part(bounds: tuple[int, int]) -> None:
            begin, end = bounds
            for start in range(begin, end, size):
                stop = min(start + size, end)
                chunk = data[start:stop]
                n = stop - start
                if self.grouped is not None and isinstance(model, Ensemble) and self._stacks(n, 1):
                    f = self.grouped.errors([model], [chunk.to(self.device)])[0]  # the members in one pass
                    s = f.mean(dim=1)
                else:
                    s, f = window_errors(model, _padded(chunk, size).to(self.device))
                scores[start:stop], per_feature[start:stop] = s[:n].cpu().numpy(), f[:n].cpu().numpy()

        parts = min(self.workers, n // _MIN_PART)
        if parts <= 1:
            part((0, n))
        else:
            cuts = [n * i // parts for i in range(parts + 1)]
            list(self._scoring_pool().map(part, itertools.pairwise(cuts)))
        return scores, per_feature

    def score_many(
        self, requests: list[tuple[str, np.ndarray, np.ndarray]]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`score` of several models' live windows ``(model_id, windows, keys)``; with
        ``model.group_networks`` all of them in one batched pass."""
        size = self.config.score_batch_size
        total = sum(len(w) for _, w, _ in requests)
        stack = (
            len(requests) > 1
            and self._stacks(total, len(requests))
            and all(len(w) <= size for _, w, _ in requests)
        )
        if self.grouped is None or not stack:
            return [self.score(model_id, windows, keys) for model_id, windows, keys in requests]
        models = []
        for model_id, _, _ in requests:
            model = self.slots[model_id].model
            if model is None:
                raise RuntimeError(f"model {model_id!r} has not been trained")
            models.append(model)
        data = [
            torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32)).to(self.device)
            for _, w, _ in requests
        ]
        errors = self.grouped.errors(models, data)
        return [(f.mean(dim=1).cpu().numpy(), f.cpu().numpy()) for f in errors]

    def _scoring_pool(self) -> ThreadPoolExecutor:
        if self._scorers is None:
            self._scorers = ThreadPoolExecutor(
                max_workers=self.workers,
                thread_name_prefix="anomalyd-score",
                initializer=torch.set_num_threads,
                initargs=(1,),
            )
        return self._scorers

    def forget_keys(self, model_id: str, keys: list[int]) -> None:
        """Drop the carried states of ``keys`` (they left this consumer)."""
        slot = self.slots.get(model_id)
        if slot is not None and slot.carried is not None:
            slot.carried.reset(keys)

    def is_trained(self, model_id: str) -> bool:
        slot = self.slots.get(model_id)
        return slot is not None and slot.model is not None

    # -- online retraining ------------------------------------------------------------------
    def observe(
        self, model_id: str, score: float, learnable: bool, key_index: int, window: np.ndarray
    ) -> bool:
        """Account for one decided window, in stream order; True when a candidate is due now.

        Only ``learnable`` windows are kept for training: the pipeline says no for a window
        flagged anomalous and for every window that still contains a flagged point.
        """
        slot = self.slots[model_id]
        slot.scored += 1
        slot.since_training += 1
        if learnable:
            slot.buffer.append((key_index, window.copy()))
        # Scores of a model about to be replaced say nothing about the next one's drift.
        if slot.drift is not None and slot.job is None and math.isfinite(score):
            slot.drifted = slot.drift.update(score) or slot.drifted
        if slot.job is None:
            reason = self._trigger(slot)
            if reason is not None:
                self._start(slot, reason)
        return slot.job is not None and slot.scored >= slot.job.swap_at

    def _trigger(self, slot: ModelSlot) -> str | None:
        cfg = self.retraining
        # Not before the error scale is measured: a candidate takes over the live model's.
        if not cfg.enabled or len(slot.buffer) < cfg.min_windows or slot.measuring is not None:
            return None
        if cfg.every_events is not None and slot.since_training >= cfg.every_events:
            return "events"
        if slot.drifted and slot.since_training >= cfg.drift_min_events:
            return "drift"
        if cfg.every_seconds is not None and self.clock() - slot.trained_at >= cfg.every_seconds:
            return "time"
        return None

    def _start(self, slot: ModelSlot, reason: str) -> None:
        windows = np.stack([w for _, w in slot.buffer])
        seed = self.config.seed + slot.version
        self._submit(slot, windows, seed, slot.scored + self.retraining.swap_after_events, reason)
        self._reset_schedule(slot)

    def _submit(self, slot: ModelSlot, windows: np.ndarray, seed: int, swap_at: int, reason: str) -> None:
        assert slot.model is not None
        if self._executor is None:
            # torch's thread count is per thread: the worker's own, set once.
            self._executor = ThreadPoolExecutor(
                max_workers=1,
                thread_name_prefix="anomalyd-train",
                initializer=torch.set_num_threads,
                initargs=(self.training.threads,),
            )
        cfg = self.retraining
        # A copy taken now, in stream order: the worker never reads weights that are scoring.
        start = copy.deepcopy(slot.model) if cfg.warm_start else None
        budget = cfg.max_steps if cfg.max_steps is not None else self.training.max_steps
        slot.cancel = _JobCancel(self._cancel)
        future = self._executor.submit(
            challenge,
            self.args,
            windows,
            self.training,
            seed,
            self.device,
            slot.model,
            slot.cancel,
            start,
            budget,
        )
        slot.job = RetrainJob(future, swap_at, reason, windows, seed)

    def discard(self, model_id: str) -> bool:
        """Drop the retraining in flight for ``model_id`` (True if there was one) and start
        the model's schedule over: a rollback makes the live model another one, and a
        candidate judged against the old one must not replace it."""
        slot = self.slots.get(model_id)
        if slot is None:
            return False
        job, slot.job = slot.job, None
        if job is not None:
            job.future.cancel()  # not started yet: never runs
            if slot.cancel is not None:
                slot.cancel.set()  # running: stops at its next batch
        slot.cancel = None
        self._reset_schedule(slot)
        return job is not None

    def _reset_schedule(self, slot: ModelSlot) -> None:
        slot.since_training = 0
        slot.trained_at = self.clock()
        self._reset_drift(slot)

    def _reset_drift(self, slot: ModelSlot) -> None:
        slot.drifted = False
        on = self.retraining.enabled and self.retraining.on_drift  # no monitor: nothing to trigger
        slot.drift = DriftMonitor(self.retraining.drift_delta, block=self._drift_block()) if on else None

    def _drift_block(self) -> int:
        block = self.retraining.drift_block
        return self.args.window_length if block is None else block

    def swap(self, model_id: str) -> RetrainOutcome:
        """Wait for the due candidate, judge it against the live model, promote it or not."""
        slot = self.slots[model_id]
        job = slot.job
        assert job is not None
        candidate = job.future.result()
        slot.job = slot.cancel = None
        self._reset_drift(slot)  # the live model's scores start afresh (or the old ones resume)
        loss = candidate.report.validation_loss
        limit = candidate.champion_loss * (1.0 + self.retraining.tolerance)
        # NaN compares false: a candidate that cannot be judged (non-finite loss or limit,
        # or no held-back windows) stays out; its NaN scores would silence every alert.
        promoted = math.isfinite(loss) and math.isfinite(limit) and loss <= limit
        if promoted:
            slot.model, slot.last_report = candidate.model, candidate.report
            slot.version += 1
        return RetrainOutcome(
            model_id,
            slot.version,
            promoted,
            job.reason,
            len(job.data),
            loss,
            candidate.champion_loss,
            candidate.scale,
            candidate.report.steps,
            candidate.report.seconds,
        )

    # -- snapshots ------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """Every model slot as numbers, arrays and tensors (``torch.load(weights_only=True)`` safe).

        A retraining in flight is kept as what it trains on and its seed; restoring the
        state starts it again, and the same data and seed give the same candidate.
        """
        slots: dict[str, Any] = {}
        now = self.clock()
        for model_id, slot in self.slots.items():
            buffer = list(slot.buffer)
            job = slot.job
            slots[model_id] = {
                "weights": None if slot.model is None else slot.model.state_dict(),
                "version": slot.version,
                "report": None if slot.last_report is None else asdict(slot.last_report),
                "buffer_keys": np.array([k for k, _ in buffer], dtype=np.int64),
                "buffer": np.stack([w for _, w in buffer]) if buffer else None,
                "scored": slot.scored,
                "since_training": slot.since_training,
                "age_s": now - slot.trained_at,
                "drift": None if slot.drift is None else np.array(slot.drift.history, dtype=np.float64),
                "drifted": slot.drifted,
                "job": None
                if job is None
                else {"data": job.data, "seed": job.seed, "swap_at": job.swap_at, "reason": job.reason},
                "carried": None if slot.carried is None else slot.carried.get_state(),
                "measuring": None if slot.measuring is None else slot.measuring.get_state(),
            }
        return slots

    def set_state(self, state: dict[str, Any]) -> None:
        """Rebuild the slots :meth:`get_state` described; restarts retrainings that were in flight."""
        self.slots = {}
        now = self.clock()
        for model_id, saved in state.items():
            slot = self.slot(model_id)
            if saved["weights"] is not None:
                slot.model = build_model(self.args).to(self.device)
                slot.model.load_state_dict({k: torch.as_tensor(v) for k, v in saved["weights"].items()})
                slot.model.eval()
            slot.version = int(saved["version"])
            slot.last_report = None if saved["report"] is None else FitReport(**saved["report"])
            if saved["buffer"] is not None:
                windows = np.asarray(saved["buffer"], dtype=np.float32)
                slot.buffer.extend(zip(np.asarray(saved["buffer_keys"]).tolist(), windows, strict=True))
            slot.scored = int(saved["scored"])
            slot.since_training = int(saved["since_training"])
            slot.trained_at = now - float(saved["age_s"])
            if saved["drift"] is not None and self.retraining.on_drift:
                history = np.asarray(saved["drift"])
                slot.drift = DriftMonitor(self.retraining.drift_delta, history, block=self._drift_block())
            slot.drifted = bool(saved["drifted"])
            if slot.carried is not None and saved.get("carried") is not None:
                slot.carried.set_state(saved["carried"])
            if saved.get("measuring") is not None:
                slot.measuring = ScaleMeasurement.from_state(saved["measuring"])
            job = saved["job"]
            if job is not None:
                data = np.asarray(job["data"], dtype=np.float32)
                self._submit(slot, data, int(job["seed"]), int(job["swap_at"]), str(job["reason"]))

    def close(self) -> None:
        """Abandon retrainings: the one running stops at its next batch, so exit never waits on it."""
        self._cancel.set()
        if self._scorers is not None:
            self._scorers.shutdown(wait=True)
            self._scorers = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


def _padded(windows: torch.Tensor, size: int) -> torch.Tensor:
    """``windows`` (N, T, F) with zero windows after them up to the next power of two (at
    most ``size``): a forward pass then sees a few batch shapes only. oneDNN, which runs the
    recurrent layers on CPU, keeps kernels and buffers per input shape; a Kafka poll's
    batches of ever other sizes made resident memory grow with every new one."""
    n = len(windows)
    bucket = min(size, 1 << max(0, n - 1).bit_length())
    if bucket <= n:
        return windows
    padding = windows.new_zeros((bucket - n, *windows.shape[1:]))
    return torch.cat((windows, padding))


def make_detector(config: Config, n_features: int) -> Detector:
    """The scorer ``config.detector`` names: the autoencoder, the forecaster, or the
    HalfSpaceTrees baseline."""
    args = (config.model, config.training, n_features, config.window.length, config.retraining)
    if config.detector == "hst":
        from anomalyd.baseline import HstDetector

        return HstDetector(config.hst, *args)
    return Detector(*args, kind=config.detector)
