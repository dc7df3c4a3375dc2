"""The tuning database: keys, best configs, bad files, concurrent writers, export/import."""
import json
import logging
import os
import sqlite3
import subprocess
import sys
import textwrap

import pytest
import torch

from braze.autotune import dbtools
from braze.autotune.db import (SCHEMA_VERSION, Trial, TuningDB, TuningDBError, get_db, open_db, software_key)

DEV, SW = "cpu-test|2cores", "torch x|triton y"
PROBLEM = {"shapes": "128x32;32x48", "dtypes": "f32,f32"}


def trial(cfg, status="ok", ms=None, problem=None, key="k1", origin="search"):
    return Trial(DEV, SW, key, "mm", "tvm", problem or {"shapes": "128x32;32x48", "dtypes": "f32,f32"}, cfg, status,
                 ms, {"reps": 3}, 1.0, "" if status == "ok" else "boom", origin)


def test_records_every_trial_and_keeps_the_best(db_path):
    db = open_db(db_path)
    db.record_many([trial({"t": 1}, ms=3.0), trial({"t": 2}, ms=2.0), trial({"t": 3}, "timeout"),
                    trial({"t": 4}, "wrong"), trial({"t": 5}, ms=2.5)])
    assert db.count() == 5 and db.count(status="ok") == 3
    b = db.best(DEV, SW, "k1", {"dtypes": "f32,f32", "shapes": "128x32;32x48"})  # key order does not matter
    assert b.config == {"t": 2} and b.time_ms == 2.0 and b.tuned
    assert db.best(DEV, "other software", "k1", {"shapes": "128x32;32x48", "dtypes": "f32,f32"}) is None
    t = trial({"t": 6}, ms=1.0)
    db.record(t)
    db.record(t)  # the same trial (uid) twice is stored once
    assert db.count() == 6 and db.best(DEV, SW, "k1", t.problem).config == {"t": 6}
    # nearest buckets: closest first, same kind only
    db.record(trial({"t": 7}, ms=9.0, problem={"shapes": "512x32;32x48", "dtypes": "f32,f32"}))
    db.record(trial({"t": 8}, ms=9.0, problem={"shapes": "256x32;32x48", "dtypes": "f16,f32"}))
    near = db.nearest(DEV, "k1", {"shapes": "256x32;32x48", "dtypes": "f32,f32"}, software=SW)
    assert [(d, b.config) for d, b in near] == [(1.0, {"t": 6}), (1.0, {"t": 7})]
    with pytest.raises(ValueError, match="status"):
        trial({}, "great")
    with pytest.raises(ValueError, match="positive time"):
        trial({}, "ok", None)


def test_a_quick_measurement_is_not_a_tuned_result(db_path):
    db = open_db(db_path)
    db.record(trial({"t": 1}, ms=2.0, origin="quick"))
    assert not db.best(DEV, SW, "k1", PROBLEM).tuned
    db.record(trial({"t": 2}, ms=3.0))
    b = db.best(DEV, SW, "k1", PROBLEM)
    assert b.tuned and b.config == {"t": 1}


def _same_bytes(path, data):
    with open(path, "rb") as f:
        return f.read() == data


@pytest.mark.parametrize("kind", ["garbage", "foreign", "newer", "damaged", "damaged_page"])
def test_a_bad_file_is_refused_clearly_and_left_untouched(tmp_path, caplog, kind):
    path = str(tmp_path / "tuning.db")
    if kind == "garbage":
        with open(path, "wb") as f:
            f.write(b"PK\x03\x04 this is a zip, not a database" * 10)
        want = "is not a SQLite file"
    elif kind == "foreign":
        c = sqlite3.connect(path)
        c.execute("create table users(name text)")
        c.commit()
        c.close()
        want = "not a braze tuning database"
    elif kind == "newer":
        open_db(path).close()
        c = sqlite3.connect(path)
        c.execute("update braze_schema set version = ?", (SCHEMA_VERSION + 1,))
        c.commit()
        c.close()
        want = "newer than this braze understands"
    else:
        first = open_db(path)
        for i in range(1 if kind == "damaged" else 400):
            first.record(trial({"t": i, "pad": "x" * 200}, ms=1.0 + i))
        first.close()  # checkpoints the WAL into the file, which is then damaged
        for ext in ("-wal", "-shm"):
            if os.path.exists(path + ext):
                os.remove(path + ext)
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
            if kind == "damaged":
                f.seek(100)
                f.write(b"\xde\xad\xbe\xef" * 600)  # the header survives, the schema page does not
            else:   # the schema and the tables' roots survive; a page inside a table does not
                assert size >= 12 * 4096
                f.seek(size - 3 * 4096)
                f.write(b"\xde\xad" * 2048)
        want = "cannot be used"
    with open(path, "rb") as f:
        before = f.read()
    with pytest.raises(TuningDBError, match=want):
        open_db(path)
    caplog.set_level(logging.ERROR)
    db = get_db(path)  # what compilation uses: never raises
    assert db.error and want.split()[0] in db.error
    assert any(want in r.getMessage() for r in caplog.records)
    db.record(trial({"t": 1}, ms=1.0))  # the session goes on in memory
    assert db.count() == 1
    assert _same_bytes(path, before)


WRITER = textwrap.dedent("""
    import sys
    from braze.autotune.db import Trial, open_db
    db = open_db(sys.argv[1])
    who = sys.argv[2]
    for i in range(int(sys.argv[3])):
        db.record(Trial("dev", "sw", "k", "mm", "tvm", {"M": 64}, {"who": who, "i": i}, "ok", 100.0 - i * 0.01))
""")


def test_concurrent_writers_lose_nothing(db_path):
    open_db(db_path).close()
    n = 150
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, db_path, who, str(n)]) for who in "ab"]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    db = open_db(db_path)
    assert db.count() == 2 * n
    assert len({(t.config["who"], t.config["i"]) for t in db.trials()}) == 2 * n
    assert db.best("dev", "sw", "k", {"M": 64}).time_ms == pytest.approx(100.0 - (n - 1) * 0.01)


def test_export_import_round_trip_and_merge(tmp_path, db_path):
    src = open_db(db_path)
    src.record_many([trial({"t": i}, ms=5.0 - i) for i in range(4)] + [trial({"t": 9}, "compile_error")])
    out = str(tmp_path / "export.json")
    assert dbtools.export_json(src, out) == 5
    dst = open_db(str(tmp_path / "other.db"))
    assert dbtools.import_json(dst, out) == 5
    assert dbtools.import_json(dst, out) == 0  # uids make it idempotent
    key = lambda ts: sorted((t.uid, json.dumps(t.config), t.status, t.time_ms, t.error) for t in ts)  # noqa: E731
    assert key(dst.trials()) == key(src.trials())
    assert dst.all_best() == src.all_best()
    third = open_db(str(tmp_path / "third.db"))
    third.record(trial({"t": 42}, ms=0.5))
    assert dbtools.merge(dst, str(tmp_path / "third.db")) == 1
    assert dst.best(DEV, SW, "k1", PROBLEM).config == {"t": 42}
    with open(tmp_path / "bad.json", "w") as f:
        json.dump({"format": "something else"}, f)
    with pytest.raises(TuningDBError, match="not a braze tuning-database export"):
        dbtools.import_json(dst, str(tmp_path / "bad.json"))
    with pytest.raises(TuningDBError, match="no such database"):
        dbtools.merge(dst, str(tmp_path / "missing.db"))


def test_prune_keeps_the_best(db_path):
    db = open_db(db_path)
    db.record_many([trial({"t": 1}, ms=1.0), trial({"t": 2}, ms=2.0), trial({"t": 3}, "timeout")])
    assert db.prune(failed=True) == 1
    assert db.count() == 2
    assert db.prune(older_than_days=-1) == 1  # everything is "old"; the best's trial stays
    assert [t.config for t in db.trials()] == [{"t": 1}]
    assert db.best(DEV, SW, "k1", PROBLEM).config == {"t": 1}


def test_software_key_names_the_versions():
    sw = software_key()
    assert f"torch {torch.__version__}" in sw and "triton" in sw and "apache-tvm" in sw and "cuda" in sw


def test_an_older_schema_is_migrated_keeping_its_trials(db_path):
    db = open_db(db_path)
    db.record(trial({"t": 1}, ms=2.0))
    from braze.autotune.db import forget_open
    db.close()
    forget_open()
    # turn it into a version-1 database: no kernel family yet
    c = sqlite3.connect(db_path)
    c.execute("drop index braze_best_nearest")
    c.execute("alter table braze_best drop column family")
    c.execute("alter table braze_trials drop column family")
    c.execute("create index braze_best_lookup on braze_best (device, kernel_key, skeleton)")
    c.execute("update braze_schema set version = 1")
    c.commit()
    c.close()
    db = open_db(db_path)
    with sqlite3.connect(db_path) as c:
        assert c.execute("select version from braze_schema").fetchone() == (SCHEMA_VERSION,)
    assert [t.config for t in db.trials()] == [{"t": 1}]
    assert db.nearest(DEV, "k1", {"shapes": "256x32;32x48", "dtypes": "f32,f32"})[0][1].config == {"t": 1}
    db.record(trial({"t": 2}, ms=1.0))
    assert db.best(DEV, SW, "k1", PROBLEM).config == {"t": 2}
