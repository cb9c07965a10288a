"""The public surface of ``mlshift``: what ``dir()`` shows is ``__all__``, each name is
documented with an example. (What the verbs' types say comes back is checked by mypy in
``make typecheck``: ``tests/unit/dry_run_types.py``.)"""

from __future__ import annotations

import inspect

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
