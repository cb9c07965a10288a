"""What mypy (``make typecheck``, strict) reads from the verbs' overloads: ``dry_run=True``
gives a ``Plan``, otherwise the new state. Checked, never run: an ``assert_type`` that does
not hold is a type error."""

from __future__ import annotations

from typing import assert_type

import mlshift
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
