"""Version checks of bundle requirements: PEP 440 ordering, local labels, unparseable versions.

``check_requirements`` reads installed versions with ``importlib.metadata``; the tests install
fake distributions as ``*.dist-info`` directories on ``sys.path`` so the real lookup runs.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from model_server._bundle import check_requirements, is_older


@pytest.mark.parametrize(
    ("installed", "wanted", "older"),
    [
        ("1.5.0rc1", "1.5.0", True),
        ("1.5.0", "1.5.0rc1", False),
        ("1.9", "1.10", True),
        ("1.10", "1.9", False),
        ("2.3.0+cu121", "2.3.0", False),
        ("2.3.0", "2.3.0+cu121", False),
        ("2.2.1+cu121", "2.3.0", True),
        ("1.0.0.dev3", "1.0.0", True),
        ("2.0", "2.0.0", False),
        ("not a version", "1.0", False),
        ("1.0", "latest", False),
    ],
)
def test_is_older_follows_pep_440(installed: str, wanted: str, older: bool) -> None:
    assert is_older(installed, wanted) is older


def _install_fake(site: Path, name: str, version: str) -> None:
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def test_check_requirements_compares_installed_versions_by_pep_440(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    installed = {
        "mlshift-fake-cuda": "2.3.0+cu121",
        "mlshift-fake-rc": "1.5.0rc1",
        "mlshift-fake-minor": "1.10",
        "mlshift-fake-odd": "2.x-custom",
    }
    for name, version in installed.items():
        _install_fake(tmp_path, name, version)
    monkeypatch.syspath_prepend(str(tmp_path))
    manifest = {
        "requirements": {
            "mlshift-fake-cuda": "2.3.0",
            "mlshift-fake-rc": "1.5.0",
            "mlshift-fake-minor": "1.9",
            "mlshift-fake-odd": "2.1",
        }
    }
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        messages = check_requirements(manifest)
    # Only the release candidate is older than what the bundle was made with; the CUDA build
    # is the same release, 1.10 is newer than 1.9, and "2.x-custom" cannot be compared.
    assert messages == [
        "bundle was made with mlshift-fake-rc 1.5.0 but mlshift-fake-rc 1.5.0rc1 is installed"
        " here; loading may fail or predict differently: pip install mlshift-fake-rc==1.5.0"
    ]
    assert [str(w.message) for w in caught] == messages
