"""Who decides what a bundle may execute: the pure parts, in process (no servers).

Covers (issue 12, section 2): a class of one's own is refused before anything is written
unless ``trust_pickle=True``, which the manifest then records; a scikit-learn pipeline holding
a type outside the allowlist is not stored with skops; model_server's reader refuses a pickle
without ``trust_pickle`` and skops types outside the allowlist (whatever ``trusted_types`` the
manifest lists) until named; requirements that would become pip options are refused by name;
HMAC signing round-trips and refuses unsigned, re-signed or edited manifests; the rendered
Deployment and its read-back carry the trust decision; settings read the trust flags.
"""

from __future__ import annotations

import hashlib
import json
import operator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlshift._bundle import read_bundle, write_bundle
from mlshift._exceptions import BuildError, BundleError
from mlshift._render import render_deployment
from mlshift._state import EndpointState, VersionSpec
from mlshift.image._pip import checked_specs
from mlshift.kube._live import version_from_deployment
from model_server._bundle import load_bundle
from model_server._settings import parse_settings
from model_server._trust import (
    SignatureError,
    UntrustedBundle,
    check_signature,
    disallowed_types,
    pinned_requirements,
    sign_manifest,
    signing_key,
)
from tests.fixtures.serving import EchoModel

X = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]])


def test_a_class_of_ones_own_needs_trust_pickle_and_the_decision_is_recorded(
    tmp_path: Path,
) -> None:
    with pytest.raises(BundleError) as refused:
        write_bundle(EchoModel(), "v1", sample=X, dest=tmp_path / "b")
    message = str(refused.value)
    assert "tests.fixtures.serving.EchoModel" in message
    assert "trust_pickle=True" in message and "--trust-pickle" in message
    assert not (tmp_path / "b").exists()
    info = write_bundle(EchoModel(), "v1", sample=X, dest=tmp_path / "b", trust_pickle=True)
    assert info.serializer == "cloudpickle" and info.manifest["trust_pickle"] is True
    assert info.trusts_pickle


def test_a_pipeline_with_a_type_outside_the_allowlist_is_not_stored_with_skops(
    tmp_path: Path,
) -> None:
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    model = make_pipeline(FunctionTransformer(operator.neg), LinearRegression()).fit(X, X[:, 0])
    with pytest.raises(BundleError, match=r"_operator\.neg.*trust_pickle=True"):
        write_bundle(model, "v1", dest=tmp_path / "b")
    assert write_bundle(model, "v1", dest=tmp_path / "b", trust_pickle=True).trusts_pickle


def test_the_reader_refuses_pickles_and_unlisted_skops_types_whatever_the_manifest_says(
    tmp_path: Path,
) -> None:
    import skops.io
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    pickled = write_bundle(EchoModel(), "v1", dest=tmp_path / "p", trust_pickle=True)
    with pytest.raises(UntrustedBundle, match="--trust-pickle"):
        load_bundle(pickled.path)
    assert load_bundle(pickled.path, trust_pickle=True).model.predict(X).tolist() == [1, 3, 5, 7]

    model = make_pipeline(FunctionTransformer(operator.neg), LinearRegression()).fit(X, X[:, 0])
    data = skops.io.dumps(model)
    dest = tmp_path / "s"
    dest.mkdir()
    (dest / "model.skops").write_bytes(data)
    manifest = {
        "format_version": 1,
        "version": "v1",
        "flavor": "sklearn",
        "serializer": "skops",
        "file": "model.skops",
        "sha256": hashlib.sha256(data).hexdigest(),
        "trusted_types": skops.io.get_untrusted_types(data=data),  # ignored by the reader
    }
    (dest / "mlshift.json").write_text(json.dumps(manifest))
    with pytest.raises(UntrustedBundle) as refused:
        load_bundle(dest)
    assert "_operator.neg" in str(refused.value)
    assert "--trust-types _operator.neg" in str(refused.value)
    loaded = load_bundle(dest, trust_types=["_operator.neg"])
    np.testing.assert_allclose(loaded.model.predict(X), model.predict(X))


def test_allowlist_is_by_module_not_by_prefix_of_a_name() -> None:
    assert disallowed_types(
        ["sklearn.tree._tree.Tree", "numpy.dtype", "collections.OrderedDict", "sklearnx.Evil"]
    ) == ["sklearnx.Evil"]
    assert disallowed_types(["builtins.eval", "os.system"], ["os.system"]) == ["builtins.eval"]


@pytest.mark.parametrize(
    ("name", "version"),
    [
        ("--index-url=http://evil", "1.0"),
        ("-e", "git+https://evil"),
        ("numpy", "1.0 --pre"),
        ("numpy", "1.0,>=0"),
        ("numpy; os_name == 'posix'", "1.0"),
        ("numpy[extra]", "1.0"),
    ],
)
def test_requirements_that_are_not_plain_pins_never_reach_pip(name: str, version: str) -> None:
    with pytest.raises(UntrustedBundle, match="not a valid PEP 508") as refused:
        pinned_requirements({name: version})
    assert repr(f"{name}=={version}") in str(refused.value)
    with pytest.raises(BuildError, match="not a valid PEP 508"):
        checked_specs({name: version})
    assert checked_specs({"scikit-learn": "1.5.2", "six": "1.16.0"}) == [
        "scikit-learn==1.5.2",
        "six==1.16.0",
    ]


def test_a_bundle_with_a_crafted_requirement_is_refused_when_read(tmp_path: Path) -> None:
    info = write_bundle(EchoModel(), "v1", dest=tmp_path / "b", trust_pickle=True)
    path = info.path / "mlshift.json"
    manifest = json.loads(path.read_text())
    manifest["requirements"] = {"--extra-index-url=http://evil": "1"}
    path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="--extra-index-url=http://evil"):
        read_bundle(info.path)


def test_signing_round_trips_and_refuses_what_the_key_did_not_sign(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("team-secret\n")
    assert signing_key({"MLSHIFT_SIGNING_KEY_FILE": str(key_file)}) == b"team-secret"
    assert signing_key({}) is None
    unsigned = write_bundle(EchoModel(), "v1", dest=tmp_path / "u", trust_pickle=True)
    monkeypatch.setenv("MLSHIFT_SIGNING_KEY_FILE", str(key_file))
    signed = write_bundle(EchoModel(), "v1", dest=tmp_path / "s", trust_pickle=True)
    assert signed.manifest["signature"]["algorithm"] == "hmac-sha256"
    assert read_bundle(signed.path).sha256 == signed.sha256
    load_bundle(signed.path, trust_pickle=True, signing_key=b"team-secret")

    with pytest.raises(SignatureError, match="not signed"):
        load_bundle(unsigned.path, trust_pickle=True, signing_key=b"team-secret")
    with pytest.raises(BundleError, match="not signed"):
        read_bundle(unsigned.path)  # the client checks too, with the key it has
    with pytest.raises(SignatureError, match="does not match"):
        load_bundle(signed.path, trust_pickle=True, signing_key=b"another key")
    edited = dict(signed.manifest, trust_pickle=True, version="v9")
    with pytest.raises(SignatureError, match="does not match"):
        check_signature(edited, b"team-secret", signed.path)
    assert sign_manifest(edited, b"k") != sign_manifest(signed.manifest, b"k")


def test_the_deployment_passes_trust_pickle_only_for_a_trusted_pickle() -> None:
    state = EndpointState("churn", namespace="ml")

    def env(spec: VersionSpec) -> dict[str, Any]:
        container = render_deployment(state, spec)["spec"]["template"]["spec"]["containers"][0]
        return {e["name"]: e["value"] for e in container["env"]}

    trusted = VersionSpec("v2", model_sha256="ab", image="r/m@sha256:1", trust_pickle=True)
    assert env(trusted)["MLSHIFT_TRUST_PICKLE"] == "1"
    assert "MLSHIFT_TRUST_PICKLE" not in env(VersionSpec("v1", image="r/m@sha256:0"))
    assert version_from_deployment(render_deployment(state, trusted)).trust_pickle
    plain = render_deployment(state, VersionSpec("v1", image="r/m@sha256:0"))
    assert not version_from_deployment(plain).trust_pickle


def test_settings_read_the_trust_flags_and_never_show_the_key(tmp_path: Path) -> None:
    base = ["--model-dir", "b"]
    assert not parse_settings(base, env={}).trust_pickle
    assert parse_settings(base, env={"MLSHIFT_TRUST_PICKLE": "1"}).trust_pickle
    assert parse_settings([*base, "--trust-pickle"], env={}).trust_pickle
    settings = parse_settings(
        [*base, "--trust-types", "a.B", "--trust-types", "c.D,e.F"],
        env={"MLSHIFT_SIGNING_KEY": "s3cret"},
    )
    assert settings.trust_types == ("a.B", "c.D", "e.F")
    assert settings.signing_key == b"s3cret" and "s3cret" not in repr(settings)
    with pytest.raises(SystemExit):
        parse_settings([*base, "--signing-key-file", str(tmp_path / "missing")], env={})
