from dataclasses import replace

import pytest
import torch

from anomalyd.checkpoint import atomic_write, list_models, load_model, model_dir, save_model
from anomalyd.errors import ModelError
from anomalyd.model import Autoencoder, ModelArgs, build_model, window_errors

ARGS = ModelArgs(n_features=2, window_length=8, hidden_size=4, cell="gru")


def test_round_trip_keeps_weights_and_metadata(tmp_path):
    model = Autoencoder(ARGS, torch.Generator().manual_seed(1))
    path = save_model(tmp_path, "pump/7", 2, model, {"validation_loss": 0.25, "windows": 100})
    loaded, meta = load_model(path, expected=ARGS)
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert meta["version"] == 2 and meta["model_id"] == "pump/7" and meta["validation_loss"] == 0.25
    assert path.parent == model_dir(tmp_path, "pump/7") and "/" not in path.parent.name


def test_truncated_checkpoint_is_rejected_by_name(tmp_path):
    path = save_model(tmp_path, "k", 1, Autoencoder(ARGS), {})
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ModelError, match=f"checkpoint {path} is corrupt"):
        load_model(path)


def test_foreign_pickle_is_refused_by_weights_only(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": 1, "args": object()}, path)  # an arbitrary object: not loadable safely
    with pytest.raises(ModelError, match="corrupt or not a checkpoint"):
        load_model(path)


def test_mismatched_config_is_rejected(tmp_path):
    path = save_model(tmp_path, "k", 1, Autoencoder(ARGS), {})
    with pytest.raises(ModelError, match="was made for"):
        load_model(path, expected=ModelArgs(n_features=3, window_length=8, hidden_size=4, cell="gru"))


def test_atomic_write_leaves_no_temp_files(tmp_path):
    target = tmp_path / "a" / "b.bin"
    atomic_write(target, b"one")
    atomic_write(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["b.bin"]


def test_list_models_reports_good_and_bad(tmp_path):
    save_model(tmp_path, "a", 1, Autoencoder(ARGS), {})
    bad = save_model(tmp_path, "a", 2, Autoencoder(ARGS), {})
    bad.write_bytes(b"garbage")
    listed = list_models(tmp_path)
    assert [m.get("version") for m in listed] == [1, None]
    assert "error" in listed[1]


def test_service_saves_a_checkpoint_per_live_model_and_cli_lists_them(tmp_path):
    import subprocess
    import sys

    from anomalyd.config import parse_config
    from anomalyd.service import StopFlag, serve

    state = tmp_path / "state"
    config = parse_config(
        {
            "source": {"type": "file", "paths": ["examples/machine.csv"]},
            "window": {"length": 16},
            "model": {"hidden_size": 8, "threads": 1},
            "training": {"warmup_events": 200, "epochs": 3},
            "retraining": {
                "every_events": 1000,
                "on_drift": False,
                "min_windows": 100,
                "swap_after_events": 50,
            },
            "output": {"alerts": []},
            "service": {"state_dir": str(state), "metrics": {"enabled": False}},
        }
    )
    serve(config, StopFlag(60))
    listed = list_models(state)
    assert listed and all("error" not in m for m in listed)
    assert listed[0]["version"] == 1 and listed[0]["reason"] == "warmup"
    assert [m["version"] for m in listed] == list(range(1, len(listed) + 1))
    out = subprocess.run(
        [sys.executable, "-m", "anomalyd.cli", "model", "list", str(state)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and "machine  v1" in out.stdout
    shown = subprocess.run(
        [sys.executable, "-m", "anomalyd.cli", "model", "show", listed[0]["path"]],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0 and "hidden_size: 8" in shown.stdout


def test_the_error_scale_is_saved_with_the_weights(tmp_path):
    args = ModelArgs(n_features=2, window_length=8, hidden_size=4, normalise_errors=True)
    model = Autoencoder(args)
    model.error_scale.copy_(torch.tensor([0.5, 2.0]))
    loaded, _ = load_model(save_model(tmp_path, "k", 1, model, {}), expected=args)
    assert loaded.error_scale.tolist() == [0.5, 2.0]
    with pytest.raises(ModelError, match="was made for"):  # a checkpoint without it is another model
        load_model(save_model(tmp_path, "k", 2, Autoencoder(ARGS), {}), expected=args)


def test_an_ensemble_round_trips_with_its_members(tmp_path):
    args = ModelArgs(n_features=2, window_length=8, hidden_size=4, members=3, normalise_errors=True)
    model = build_model(args, torch.Generator().manual_seed(3))
    model.error_scale.copy_(torch.tensor([0.5, 2.0]))
    loaded, _ = load_model(save_model(tmp_path, "k", 1, model, {}), expected=args)
    x = torch.randn(4, 8, 2)
    assert torch.equal(window_errors(model, x)[0], window_errors(loaded, x)[0])
    with pytest.raises(ModelError, match="was made for"):  # three members are not one
        load_model(save_model(tmp_path, "k", 2, model, {}), expected=replace(args, members=1))
