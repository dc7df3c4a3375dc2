"""Fixtures of the autotuner tests: a fresh tuning database per test, the
test code generators (real TVM kernels, broken ones) registered in place of
the project's, and one measurement worker shared by the tests of a module."""
import logging
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # tvm_testgen, for this process and (PYTHONPATH) the workers

os.environ["BRAZE_PROGRESS"] = "0"
logging.getLogger("optuna").setLevel(logging.WARNING)


@pytest.fixture
def db_path(tmp_path, monkeypatch):
    from braze.autotune import db as dbmod

    path = str(tmp_path / "tuning.db")
    monkeypatch.setenv("BRAZE_TUNING_DB", path)
    dbmod.forget_open()
    yield path
    dbmod.forget_open()


@pytest.fixture
def generators(monkeypatch):
    """Register the given test generators only: ``generators("tvm", "broken")``."""
    from braze.autotune import contract
    from braze.compiler import kernels

    import tvm_testgen

    table = {"tvm": tvm_testgen.gen_tvm, "broken": tvm_testgen.gen_broken}

    def use(*names):
        monkeypatch.setattr(contract, "GENERATORS", [(n, table[n]) for n in names])
        monkeypatch.setattr(kernels, "_load_generators", lambda: None)
        return [f"tvm_testgen:{table[n].__name__}" for n in names]
    return use


@pytest.fixture(scope="module")
def measurer():
    from braze.autotune.measure import MeasureWorker

    w = MeasureWorker()
    yield w
    w.close()
