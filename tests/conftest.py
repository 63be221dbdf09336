"""Shared pytest configuration.

Each real service has its own fixture module under ``tests/harness``; they are loaded as
plugins so a test only starts the services it asks for (all fixtures are session-scoped).
"""

pytest_plugins = [
    "tests.harness.temporal",
    "tests.harness.redis",
    "tests.harness.k8s",
    "tests.harness.s3",
]
