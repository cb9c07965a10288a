"""The ``mlshift`` command line without servers: arguments, errors and model files.

Run in-process (``main([...])`` with capsys) over a local target whose state directory
(``$MLSHIFT_HOME``) is the test's own and empty: usage errors exit 2 as argparse does; every
mlshift error prints ``mlshift: <message>`` to stderr and exits 2, among them any verb on an
endpoint that does not exist (``status nope`` used to print an empty table, ``delete nope``
"deleted"). Saved model files load by their suffix; a bundle directory is passed on as is.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
import skops.io

from mlshift.__main__ import _load_model, _load_sample, _weights, main
from mlshift._exceptions import MlshiftError


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "home"
    monkeypatch.setenv("MLSHIFT_HOME", str(path))
    return path


def test_weights_pairs() -> None:
    assert _weights(["v1=90", "v2=10"]) == {"v1": 90, "v2": 10}
    assert _weights([" v2 = 50"]) == {"v2": 50}
    for bad in (["v1"], ["v1=x"], ["=5"], ["v1=-5"], ["v1=10", "v1=90"]):
        with pytest.raises(MlshiftError, match="VERSION=WEIGHT|twice"):
            _weights(bad)


@pytest.mark.parametrize(
    "argv",
    [[], ["bogus"], ["status"], ["shift", "churn"], ["deploy", "churn", "v1"], ["remove", "c"]],
)
def test_usage_errors_exit_2_as_argparse_does(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "usage: mlshift" in capsys.readouterr().err


def test_help_says_that_loading_a_pickle_runs_code(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["deploy", "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "runs code stored in it" in text
    assert ".skops" in text and ".joblib" in text and ".pkl" in text
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert "usage: mlshift demo" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "nope"],
        ["delete", "nope"],
        ["shift", "nope", "v1=100"],
        ["shift", "nope", "v1=90", "v2=10"],
        ["promote", "nope", "v1"],
        ["rollback", "nope"],
        ["remove", "nope", "v1"],
        ["revive", "nope"],
        ["metrics", "nope", "--since", "1m"],
    ],
)
def test_an_unknown_endpoint_is_an_error(
    argv: list[str], home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("mlshift: no endpoint 'nope' on the local target")
    assert str(home) in err
    assert not (home / "endpoints" / "nope").exists()


def test_a_bad_endpoint_name_is_an_error(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "Churn_1"]) == 2
    assert "(for example 'churn-1')" in capsys.readouterr().err


def test_list_on_an_empty_home(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert f"no endpoints in {home}" in err


def test_list_on_kubernetes_says_how_instead(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--target", "kubernetes", "--namespace", "ml"]) == 2
    assert "kubectl get services" in capsys.readouterr().err


def test_deploy_of_a_missing_or_unknown_model_file(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["deploy", "churn", "v1", str(tmp_path / "nothing.joblib")]) == 2
    assert "mlshift: no model at" in capsys.readouterr().err
    weird = tmp_path / "model.h5"
    weird.write_bytes(b"\x00")
    assert main(["deploy", "churn", "v1", str(weird)]) == 2
    assert "use a .skops, .joblib, .pkl or .pickle file" in capsys.readouterr().err
    broken = tmp_path / "model.pkl"
    broken.write_bytes(b"not a pickle")
    assert main(["deploy", "churn", "v1", str(broken)]) == 2
    assert f"cannot load the model in {broken}" in capsys.readouterr().err
    assert not (home / "endpoints" / "churn").exists()


def test_model_files_load_by_suffix(tmp_path: Path, models: list[Any]) -> None:
    model = models[0]
    joblib.dump(model, tmp_path / "m.joblib")
    with open(tmp_path / "m.pkl", "wb") as fh:
        pickle.dump(model, fh)
    skops.io.dump(model, tmp_path / "m.skops")
    X = np.ones((2, 4))
    for name in ("m.joblib", "m.pkl", "m.skops"):
        loaded = _load_model(tmp_path / name)
        assert loaded.predict(X).tolist() == model.predict(X).tolist(), name
    assert _load_model(tmp_path) == str(tmp_path)  # a directory: a bundle, read by deploy


def test_samples_load_their_first_rows(tmp_path: Path) -> None:
    frame = pd.DataFrame({"tenure": range(10), "spend": np.linspace(0, 1, 10)})
    frame.to_csv(tmp_path / "x.csv", index=False)
    np.save(tmp_path / "x.npy", frame.to_numpy())
    sample = _load_sample(tmp_path / "x.csv")
    assert list(sample.columns) == ["tenure", "spend"]
    assert len(sample) == 5
    assert str(sample["tenure"].dtype) == "int64"
    assert _load_sample(tmp_path / "x.npy").shape == (5, 2)
    with pytest.raises(MlshiftError, match=r"\.csv, \.parquet or \.npy"):
        _load_sample(tmp_path / "x.txt")


def test_rbac_flags_and_autoscale_option(capsys: pytest.CaptureFixture[str]) -> None:
    """``mlshift rbac ml --autoscale`` grants what autoscaled versions need; --autoscale
    MIN,MAX,CPU reads as deploy(autoscale=...) does."""
    import yaml

    from mlshift.__main__ import _autoscale

    assert main(["rbac", "ml", "--autoscale", "--pod-monitor"]) == 0
    role = next(yaml.safe_load_all(capsys.readouterr().out))
    granted = {r for rule in role["rules"] for r in rule["resources"]}
    assert {"poddisruptionbudgets", "horizontalpodautoscalers", "podmonitors"} <= granted
    assert _autoscale("2,8,70") == (2, 8, 70)
    assert _autoscale(None) is None
    with pytest.raises(MlshiftError, match="MIN,MAX,CPU"):
        _autoscale("2-8")
