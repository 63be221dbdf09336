"""The repository layout must never shadow the stdlib ``operator`` module."""

import importlib
import sysconfig
from pathlib import Path


def test_operator_is_the_stdlib_module():
    op = importlib.import_module("operator")
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    assert Path(op.__file__).resolve().parent == stdlib
    assert callable(op.itemgetter)


def test_both_packages_import():
    assert importlib.import_module("deepagent_temporal").__name__ == "deepagent_temporal"
    assert importlib.import_module("deepagent_operator").__name__ == "deepagent_operator"
