"""Shared pytest set-up: each area's fixtures live in tests/fixtures/<area>.py."""

pytest_plugins = [
    "tests.fixtures.serving",
    "tests.fixtures.registry",
    "tests.fixtures.prometheus",
    "tests.fixtures.kube",
    "tests.fixtures.local",
]
