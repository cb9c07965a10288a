"""The public surface of ``mlshift``: what ``dir()`` shows is ``__all__``, each name is
documented with an example, and the verbs' types say what comes back."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import mlshift


def test_dir_shows_exactly_all() -> None:
    public = [n for n in dir(mlshift) if not n.startswith("_")]
    assert public == sorted(mlshift.__all__)
    assert mlshift.__all__ == sorted(mlshift.__all__)
    for name in mlshift.__all__:
        getattr(mlshift, name)  # every lazy name resolves
    # Submodules imported on the way become attributes; only the runnable demo may be one
    # that is not part of the API.
    stray = {n for n in vars(mlshift) if not n.startswith("_")} - set(mlshift.__all__)
    assert stray <= {"demo"}


@pytest.mark.parametrize("name", mlshift.__all__)
def test_every_export_has_a_docstring_with_an_example(name: str) -> None:
    doc = inspect.getdoc(getattr(mlshift, name)) or ""
    assert doc.strip(), f"mlshift.{name} has no docstring"
    assert ">>>" in doc, f"mlshift.{name}'s docstring shows no example"


def test_module_level_deploy_keeps_the_endpoint_signature() -> None:
    module = inspect.signature(mlshift.deploy)
    method = inspect.signature(mlshift.Endpoint.deploy)
    assert list(module.parameters) == [p for p in method.parameters if p != "self"]
    for name, param in module.parameters.items():
        assert param.default == method.parameters[name].default
        assert param.kind == method.parameters[name].kind


@pytest.mark.slow
def test_dry_run_verbs_are_typed_by_their_flag(tmp_path: Path) -> None:
    """mypy reads the overloads: dry_run=True gives a Plan, otherwise the new state."""
    code = """
import mlshift
from typing import assert_type
from mlshift import Endpoint, Plan, Version

ep = mlshift.endpoint("churn")
assert_type(ep.shift({"v1": 100}), Endpoint)
assert_type(ep.shift({"v1": 100}, dry_run=True), Plan)
assert_type(ep.promote("v1"), Endpoint)
assert_type(ep.promote("v1", dry_run=True), Plan)
assert_type(ep.rollback(dry_run=True), Plan)
assert_type(ep.route_header("x-a", "1", "v1", dry_run=True), Plan)
assert_type(ep.mirror(None, dry_run=True), Plan)
assert_type(ep.remove("v1", dry_run=True), Plan)
assert_type(ep.delete(dry_run=True), Plan)
assert_type(ep.deploy(object(), "v1"), Version)
assert_type(ep.deploy(object(), "v1", dry_run=True), Plan)
assert_type(mlshift.deploy(object(), "v1", dry_run=True), Plan)
flag: bool = True
assert_type(ep.shift("v1", 100, dry_run=flag), Endpoint | Plan)
"""
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\nstrict = True\nignore_missing_imports = True\n")
    command = [sys.executable, "-m", "mypy", "--config-file", str(config), "--no-incremental"]
    result = subprocess.run(
        [*command, "--cache-dir", str(tmp_path / "cache"), "-c", code],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
