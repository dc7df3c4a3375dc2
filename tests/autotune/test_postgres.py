"""A real PostgreSQL server, started by the test on loopback: two tuning
workers share one Optuna study storage and one tuning database on it.

The server binaries come from the project's set-up (``make test`` installs
the ``postgresql`` package with apt-get when it is missing and it runs as
root). As root the throwaway cluster runs as the ``postgres`` user.
"""
import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile

import pytest
from optuna.trial import TrialState

from braze.autotune.db import Trial, TuningDB
from braze.autotune.distributed import run_workers, tasks_for
from braze.autotune.tuner import Budget, make_storage
from braze.compiler.driver import compile_graph
from braze.config import Options

pytest.importorskip("tvm", reason="these tests tune real TVM/LLVM kernels")
import tvm_testgen as tg  # noqa: E402

pytestmark = pytest.mark.postgres


def _bindir():
    found = shutil.which("initdb")
    if found:
        return os.path.dirname(os.path.realpath(found))
    cands = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(cands[-1]) if cands else None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        pytest.skip("psycopg2 is not installed (it is in the test extras: pip install -e '.[test]')")
    bindir = _bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed and could not be: "
                    "`make test` installs the postgresql package with apt-get when run as root")
    run_as = []
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
        run_as = ["runuser", "-u", "postgres", "--"]
    root = tempfile.mkdtemp(prefix="braze-pg-", dir="/tmp")
    os.chmod(root, 0o755)
    data = os.path.join(root, "data")
    os.makedirs(data)
    if run_as:
        shutil.chown(root, "postgres")
        shutil.chown(data, "postgres")
    port = _free_port()

    def sh(*cmd):
        return subprocess.run(run_as + list(cmd), capture_output=True, text=True, timeout=120)

    r = sh(os.path.join(bindir, "initdb"), "-D", data, "-A", "trust", "-U", "braze", "-E", "UTF8", "--no-sync")
    if r.returncode:
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"initdb failed: {r.stderr[-1500:]}")
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off -c max_connections=50"
    r = sh(os.path.join(bindir, "pg_ctl"), "-D", data, "-l", os.path.join(root, "server.log"), "-o", opts, "-w",
           "-t", "60", "start")
    if r.returncode:
        log = open(os.path.join(root, "server.log")).read()[-1500:] if os.path.exists(
            os.path.join(root, "server.log")) else ""
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"pg_ctl start failed: {r.stderr[-800:]} {log}")
    try:
        yield f"postgresql+psycopg2://braze@127.0.0.1:{port}/postgres"
    finally:
        sh(os.path.join(bindir, "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def test_database_on_postgres(postgres_url):
    db = TuningDB.open(postgres_url)
    p = {"shapes": "64x64", "dtypes": "f32"}
    db.record_many([Trial("dev", "sw", "k", "mm", "tvm", p, {"t": i}, "ok", 3.0 - i) for i in range(3)])
    db.record(Trial("dev", "sw", "k", "mm", "tvm", p, {"t": 9}, "timeout", error="hang"))
    assert db.best("dev", "sw", "k", p).config == {"t": 2}
    assert db.count(kernel_key="k") == 4
    db.close()


def test_two_workers_share_one_study_and_one_database_on_postgres(postgres_url, generators):
    generators("tvm")
    prog = compile_graph(tg.gemm_graph(40, 32, 48), Options(extra={"select": "first"}))
    tasks = tasks_for(prog, {}, Options())
    TuningDB.open(postgres_url).close()  # braze's tables first; Optuna's join them in the same database
    summary = run_workers(tasks, 2, postgres_url, Budget(trials=10, patience=None, trial_timeout=60),
                          storage=postgres_url, seed=0, timeout=400)
    assert [w["exit_code"] for w in summary["workers"]] == [0, 0], [w.get("log_tail") or w.get("error") for w in summary["workers"]]
    db = TuningDB.open(postgres_url)
    storage = make_storage(postgres_url)
    (study,) = [s for s in storage.get_all_studies() if s.study_name.startswith("braze:tvm_test_matmul_relu")]
    ts = storage.get_all_trials(study._study_id, deepcopy=False)
    done = [t for t in ts if t.state in (TrialState.COMPLETE, TrialState.FAIL)
            and t.user_attrs.get("status") != "invalid"]  # rejected by a constraint: not in the budget
    assert 10 <= len(done) <= 11 and not any(t.state == TrialState.RUNNING for t in ts)
    numbers = {t.number for t in ts}
    assert len(numbers) == len(ts)
    trials = [t for t in db.trials() if t.study == study.study_name]
    db_cfgs = {json.dumps(t.config, sort_keys=True) for t in trials}
    for t in done:
        if t.state == TrialState.COMPLETE:
            assert json.dumps(json.loads(t.user_attrs["config"]), sort_keys=True) in db_cfgs
    pids = {t.host.rsplit(":", 1)[1] for t in trials}
    assert pids == {str(w["pid"]) for w in summary["workers"]}  # both workers tuned the one study
    assert db.count() - db.count(device="dev") == sum(w["recorded"] for w in summary["workers"])
    lib = [t for t in db.trials() if t.kernel_name.startswith("library_")]
    assert lib and all(t.status == "ok" for t in lib)
    db.close()
