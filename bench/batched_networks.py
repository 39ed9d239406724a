"""Many networks' forward passes: one at a time, or stacked into one batched pass (`anomalyd.grouped`).

    .venv/bin/python bench/batched_networks.py [--smoke] [--device cpu|cuda]

The default model (LSTM autoencoder, window 64, hidden 32, one feature) scores random
windows. Two cases, each timed per network (``window_errors`` once per model, as
``model.group_networks: off`` scores) and stacked (``GroupedScorer``, as ``on``):

- an ensemble of 3 members on a batch of 512 windows, next to one network on the same batch;
- 1,000 per-key models with one window each (a batch of 1,024 events over 1,000 keys, as
  ``scope: per_key`` sees it), next to one shared model scoring all 1,024 windows at once.

Windows/s is the median of rounds that alternate the methods, on one torch thread.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from common import header, parse_args, ratio, table

ROUNDS = {False: 5, True: 2}
SIZES = {False: (512, 1_000, 1_024), True: (64, 20, 24)}  # ensemble batch, per-key models, shared batch


def rate(run: Callable[[], Any], windows: int, sync: Callable[[], None]) -> float:
    started = time.perf_counter()
    run()
    sync()
    return windows / (time.perf_counter() - started)


def main() -> None:
    import torch

    from anomalyd.grouped import GroupedScorer
    from anomalyd.model import ModelArgs, build_model, resolve_device, window_errors

    args = parse_args(__doc__.splitlines()[0], options)
    torch.set_num_threads(1)
    device = resolve_device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    header(f"batched networks on {device.type}: per network vs one stacked pass", args.smoke)
    batch, keys, shared_batch = SIZES[args.smoke]
    single = ModelArgs(n_features=1, window_length=64, hidden_size=32)
    one = build_model(single).to(device).eval()
    ensemble = build_model(ModelArgs(1, 64, 32, members=3)).to(device).eval()
    per_key = [build_model(single, torch.Generator().manual_seed(i)).to(device).eval() for i in range(keys)]
    x = torch.randn(batch, 64, 1, device=device)
    shared_x = torch.randn(shared_batch, 64, 1, device=device)
    key_x = [shared_x[i : i + 1] for i in range(keys)]
    scorer = GroupedScorer()
    cases: dict[str, tuple[Callable[[], Any], int]] = {
        "one network, batch": (lambda: window_errors(one, x), batch),
        "3 members, per network": (lambda: window_errors(ensemble, x), batch),
        "3 members, stacked": (lambda: scorer.errors([ensemble], [x]), batch),
        "one shared model, all windows": (lambda: window_errors(one, shared_x), shared_batch),
        "per-key models, per network": (
            lambda: [window_errors(m, w) for m, w in zip(per_key, key_x, strict=True)],
            keys,
        ),
        "per-key models, stacked": (lambda: GroupedScorer().errors(per_key, key_x), keys),
    }
    for run, _ in cases.values():  # first-use costs (and the stacked weights' cache) outside timing
        run()
    rates: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(ROUNDS[args.smoke]):
        for name, (run, windows) in cases.items():
            rates[name].append(rate(run, windows, sync))
    median = {name: statistics.median(values) for name, values in rates.items()}
    rows = [
        [name, windows, median[name], ratio(median[name], median[reference])]
        for (name, (_, windows)), reference in zip(
            cases.items(), ["one network, batch"] * 3 + ["one shared model, all windows"] * 3, strict=True
        )
    ]
    table(
        "Per network vs stacked",
        ["case", "windows per pass", "windows/s", "vs one model"],
        rows,
        [
            f"{batch} windows per ensemble pass; {keys:,} per-key models with one window each vs one model "
            f"on {shared_batch:,} windows; stacked per-key timings include stacking the weights each pass "
            f"(a replay keeps them while the models stay); median of {ROUNDS[args.smoke]} rounds; "
            "one torch thread."
        ],
    )


def options(parser: Any) -> None:
    parser.add_argument(
        "--device", default="cpu", choices=["cpu", "cuda", "auto"], help="where the models run"
    )


if __name__ == "__main__":
    main()
