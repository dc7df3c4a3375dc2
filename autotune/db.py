"""The tuning database: every measurement braze made, and the best config per key.

A key is (device, software, kernel, problem):

- device: :attr:`DeviceInfo.key` (GPU name, compute capability, SM count;
  or CPU model and cores),
- software: the versions of torch, triton, tvm and CUDA (:func:`software_key`),
- kernel: the kernel's structural key (``Kernel.key()``) and its name,
- problem: the shape bucket and dtypes (``Kernel.problem(env)``, canonical JSON).

Stored: one row per trial (config JSON, time statistics, status ``ok`` |
``compile_error`` | ``runtime_error`` | ``timeout`` | ``wrong`` | ``invalid``,
where it came from), and per key the best ``ok`` config. Only data is kept:
JSON text and numbers, never code, never pickles.

SQLite is the default (one file, WAL mode, several processes may write at
once); any SQLAlchemy URL (``postgresql://...``) serves a shared team
database. A file that is not SQLite, or SQLite without braze's schema, or
with a newer schema version, raises :class:`TuningDBError` on open;
:func:`get_db` turns that into a logged error and an in-memory database, so
the program runs on with defaults and the file is left untouched.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping, Optional

import sqlalchemy as sa

from braze.autotune.db_schema import (MIGRATIONS, OPTUNA_TABLES, SCHEMA_VERSION, best_table,  # noqa: F401
                                      metadata, schema_table, trials_table)
from braze.autotune.space import bucket_distance, problem_key, problem_signature
from braze.version import __version__

log = logging.getLogger("braze.autotune.db")

STATUSES = ("ok", "compile_error", "runtime_error", "timeout", "wrong", "invalid")
SQLITE_MAGIC = b"SQLite format 3\x00"


class TuningDBError(RuntimeError):
    """The tuning database cannot be used (foreign, corrupt, newer schema, unreachable)."""


# --- records ----------------------------------------------------------------
@dataclass
class Trial:
    """One measurement of one config of one kernel on one problem."""

    device: str
    software: str
    kernel_key: str
    kernel_name: str
    backend: str
    problem: Mapping[str, Any]
    config: Mapping[str, Any]
    status: str
    time_ms: Optional[float] = None
    stats: Mapping[str, Any] = field(default_factory=dict)
    compile_ms: Optional[float] = None
    error: str = ""
    origin: str = "search"       # "search" | "confirm" | "quick" | "import"
    study: str = ""
    family: str = ""             # shape-free key: kernels of one template at any static shape
    host: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")  # who measured it
    created: float = field(default_factory=time.time)
    uid: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"trial status {self.status!r}: expected one of {STATUSES}")
        if self.status == "ok" and (self.time_ms is None or not self.time_ms > 0):
            raise ValueError("an ok trial needs a positive time_ms")

    def row(self) -> dict[str, Any]:
        d = asdict(self)
        d["problem"] = problem_key(self.problem)
        d["skeleton"] = problem_signature(self.problem)[0]
        d["config"] = config_json(self.config)
        d["stats"] = json.dumps(dict(self.stats), sort_keys=True)
        d["error"] = (self.error or "")[:4000]
        return d

    @staticmethod
    def from_row(r: Mapping[str, Any]) -> "Trial":
        return Trial(r["device"], r["software"], r["kernel_key"], r["kernel_name"], r["backend"],
                     json.loads(r["problem"]), json.loads(r["config"]), r["status"], r["time_ms"],
                     json.loads(r["stats"] or "{}"), r["compile_ms"], r["error"] or "", r["origin"],
                     r["study"] or "", r["family"] or "", r["host"] or "", r["created"], r["uid"])


@dataclass(frozen=True)
class Best:
    device: str
    software: str
    kernel_key: str
    kernel_name: str
    backend: str
    problem: dict
    config: dict
    time_ms: float
    tuned: bool
    trial_uid: str


def config_json(config: Mapping[str, Any]) -> str:
    return json.dumps(dict(config), sort_keys=True, separators=(",", ":"), default=_json_default)


def _json_default(v: Any) -> Any:
    if isinstance(v, tuple):
        return list(v)
    raise TypeError(f"config value {v!r} of type {type(v).__name__} is not JSON data")


def software_key() -> str:
    """Versions of what generates and runs kernels: torch, CUDA, triton, tvm."""
    import importlib.metadata as md

    import torch

    parts = [f"torch {torch.__version__}", f"cuda {torch.version.cuda or 'none'}"]
    for dist in ("triton", "apache-tvm"):
        try:
            parts.append(f"{dist} {md.version(dist)}")
        except md.PackageNotFoundError:
            parts.append(f"{dist} none")
    return "|".join(parts)


# --- opening ----------------------------------------------------------------
def default_url(tuning_db: Optional[str] = None) -> str:
    """``tuning_db`` (path or URL), else $BRAZE_TUNING_DB, else ~/.cache/braze/tuning.db."""
    where = tuning_db or os.environ.get("BRAZE_TUNING_DB") or os.path.join(
        os.path.expanduser("~"), ".cache", "braze", "tuning.db")
    return to_url(where)


def to_url(where: str) -> str:
    if where == ":memory:":
        return "sqlite://"
    if "://" in where:
        return where
    return "sqlite:///" + os.path.abspath(os.path.expanduser(where))


def _sqlite_path(url: str) -> Optional[str]:
    u = sa.engine.make_url(url)
    if u.get_backend_name() != "sqlite":
        return None
    return u.database or None  # None or "" : in memory


def check_sqlite_file(path: str) -> None:
    """Refuse a file that is not a SQLite database (before SQLite touches it)."""
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return
    with open(path, "rb") as f:
        head = f.read(16)
    if head != SQLITE_MAGIC:
        raise TuningDBError(f"tuning database {path} is not a SQLite file (it starts with {head[:8]!r}); "
                            "braze leaves it untouched and runs with default configs. Move it away or point "
                            "$BRAZE_TUNING_DB / Options.tuning_db elsewhere")


def precheck_sqlite(path: str) -> None:
    """Look at an existing SQLite file read-only before braze writes to it (WAL
    mode, schema): a foreign, newer or damaged file is refused untouched."""
    import sqlite3

    check_sqlite_file(path)
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)
    except sqlite3.Error as e:
        raise TuningDBError(f"tuning database {path} cannot be opened: {e}") from None
    try:
        names = {r[0] for r in con.execute("select name from sqlite_master where type = 'table'")}
        ours = {t.name for t in metadata.sorted_tables}
        if "braze_schema" not in names:
            if names - OPTUNA_TABLES or names & ours:
                raise TuningDBError(
                    f"{path} is a SQLite database but not a braze tuning database (it has tables "
                    f"{', '.join(sorted(names)[:6])} and no braze_schema); braze leaves it untouched and runs "
                    "with default configs")
            return
        rows = con.execute("select version from braze_schema").fetchall()
        if len(rows) == 1 and isinstance(rows[0][0], int) and rows[0][0] > SCHEMA_VERSION:
            raise TuningDBError(
                f"{path} has tuning-database schema version {rows[0][0]}, newer than this braze understands "
                f"({SCHEMA_VERSION}); braze leaves it untouched and runs with default configs (upgrade braze "
                "or use another database)")
        # NOTE: every page, not just the tables' roots (a count reads few pages): a file
        # with a valid header and one damaged page otherwise fails write by write later
        problems = [r[0] for r in con.execute("pragma quick_check").fetchall()]
        if problems != ["ok"]:
            raise sqlite3.DatabaseError(f"SQLite's quick_check reports {problems[0]}"
                                        + (f" and {len(problems) - 1} more" if len(problems) > 1 else ""))
    except sqlite3.DatabaseError as e:
        raise TuningDBError(f"tuning database {path} cannot be used: {e} (it looks damaged); braze leaves it "
                            "untouched and runs with default configs") from None
    finally:
        con.close()


def _make_engine(url: str) -> sa.Engine:
    path = _sqlite_path(url)
    if url.startswith("sqlite"):
        if path:
            precheck_sqlite(path)
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            engine = sa.create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})
        else:
            engine = sa.create_engine("sqlite://", connect_args={"check_same_thread": False},
                                      poolclass=sa.pool.StaticPool)

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):
            # NOTE: pysqlite's own transaction handling is turned off so that
            # "begin" below controls it: writes take the lock up front
            # (BEGIN IMMEDIATE), which with busy_timeout makes concurrent
            # writers wait their turn instead of failing mid-transaction.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            if path:
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN")

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


class TuningDB:
    """A tuning database at a SQLAlchemy URL (see :func:`open_db`)."""

    def __init__(self, url: str, engine: sa.Engine, error: Optional[str] = None):
        self.url = url
        self.engine = engine
        self.error = error          # set when this is the in-memory stand-in for a database that failed
        self._lock = threading.Lock()

    # -- opening --------------------------------------------------------------
    @classmethod
    def open(cls, url: str) -> "TuningDB":
        """Open (creating or migrating) the database at ``url``; raises TuningDBError."""
        url = to_url(url)
        try:
            engine = _make_engine(url)
            db = cls(url, engine)
            db._init_schema()
            return db
        except TuningDBError:
            raise
        except sa.exc.DBAPIError as e:
            raise TuningDBError(f"tuning database {safe_url(url)} cannot be used: {_short(e)}") from None
        except Exception as e:  # noqa: BLE001 - bad URL, missing driver
            raise TuningDBError(f"tuning database {safe_url(url)} cannot be opened: {type(e).__name__}: {e}") \
                from None

    def _init_schema(self) -> None:
        with self._write() as conn:
            names = set(sa.inspect(conn).get_table_names())
            if "braze_schema" not in names:
                ours = {t.name for t in metadata.sorted_tables}
                # NOTE: Optuna's RDB storage may share the database (distributed
                # tuning with one URL); its tables are not foreign.
                if names - OPTUNA_TABLES or names & ours:
                    raise TuningDBError(
                        f"{safe_url(self.url)} is a database but not a braze tuning database (it has tables "
                        f"{', '.join(sorted(names)[:6])} and no braze_schema); braze leaves it untouched")
                metadata.create_all(conn)
                conn.execute(schema_table.insert().values(version=SCHEMA_VERSION, created=time.time(),
                                                          braze=_braze_version()))
                return
            rows = conn.execute(sa.select(schema_table.c.version)).all()
            if len(rows) != 1:
                raise TuningDBError(f"{safe_url(self.url)}: braze_schema holds {len(rows)} rows, expected 1")
            version = rows[0][0]
            if version > SCHEMA_VERSION:
                raise TuningDBError(
                    f"{safe_url(self.url)} has tuning-database schema version {version}, newer than this "
                    f"braze understands ({SCHEMA_VERSION}); upgrade braze or use another database")
            for v in range(version + 1, SCHEMA_VERSION + 1):
                log.info("migrating tuning database %s to schema version %d", safe_url(self.url), v)
                MIGRATIONS[v](conn)
            if version < SCHEMA_VERSION:
                conn.execute(schema_table.update().values(version=SCHEMA_VERSION))
            missing = {t.name for t in metadata.sorted_tables} - set(sa.inspect(conn).get_table_names())
            if missing:
                raise TuningDBError(f"{safe_url(self.url)} lacks tables {sorted(missing)} of schema "
                                    f"version {version}; it is damaged")

    def close(self) -> None:
        self.engine.dispose()

    # -- transactions ---------------------------------------------------------
    def _write(self):
        return _Txn(self.engine, write=True)

    def _read(self):
        return _Txn(self.engine, write=False)

    # -- writing ---------------------------------------------------------------
    def record(self, trial: Trial) -> None:
        self.record_many([trial])

    def record_many(self, trials: Iterable[Trial]) -> int:
        """Insert trials (skipping uids already present) and update the best per key."""
        rows = [t.row() for t in trials]
        if not rows:
            return 0
        return _retry(lambda: self._record_rows(rows))

    def _record_rows(self, rows: list[dict]) -> int:
        n = 0
        with self._write() as conn:
            uids = [r["uid"] for r in rows]
            have = set()
            for i in range(0, len(uids), 500):
                have |= {u for (u,) in conn.execute(sa.select(trials_table.c.uid).where(
                    trials_table.c.uid.in_(uids[i:i + 500])))}
            fresh = [r for r in rows if r["uid"] not in have]
            if fresh:
                conn.execute(trials_table.insert(), fresh)
            for r in fresh:
                n += 1
                if r["status"] == "ok":
                    self._update_best(conn, r)
        return n

    def _update_best(self, conn, r: dict) -> None:
        b = best_table.c
        key = (b.device == r["device"]) & (b.software == r["software"]) & (b.kernel_key == r["kernel_key"]) & \
              (b.problem == r["problem"])
        tuned = r["origin"] in ("search", "confirm")
        if tuned:
            conn.execute(best_table.update().where(key).values(tuned=True))
        # NOTE: a confirmation (a winner and the default re-timed in alternation,
        # see tuner._confirm) decides the best whatever faster single timing came before.
        beats = b.time_ms > r["time_ms"] if r["origin"] != "confirm" else sa.true()
        res = conn.execute(best_table.update().where(key & beats).values(
            config=r["config"], time_ms=r["time_ms"], trial_uid=r["uid"], kernel_name=r["kernel_name"],
            updated=time.time()))
        if res.rowcount:
            return
        exists = conn.execute(sa.select(b.id).where(key)).first()
        if exists is None:
            conn.execute(best_table.insert().values(
                device=r["device"], software=r["software"], kernel_key=r["kernel_key"], problem=r["problem"],
                skeleton=r["skeleton"], family=r["family"] or r["kernel_key"], kernel_name=r["kernel_name"],
                backend=r["backend"], config=r["config"],
                time_ms=r["time_ms"], trial_uid=r["uid"], tuned=tuned, updated=time.time()))

    # -- reading ---------------------------------------------------------------
    def best(self, device: str, software: str, kernel_key: str, problem: Mapping[str, Any]) -> Optional[Best]:
        """The best ok config for exactly this key, or None."""
        b = best_table.c
        with self._read() as conn:
            r = conn.execute(sa.select(best_table).where(
                (b.device == device) & (b.software == software) & (b.kernel_key == kernel_key) &
                (b.problem == problem_key(problem)))).mappings().first()
        return _best(r) if r else None

    def nearest(self, device: str, family: str, problem: Mapping[str, Any], software: Optional[str] = None,
                limit: int = 3) -> list[tuple[float, Best]]:
        """Best configs of the nearest other shape buckets of the same kernel
        family (the kernel's template and structure at any static shape, see
        ``recipe.family_key``; closest first); ``software=None`` looks across
        software versions."""
        b = best_table.c
        skel = problem_signature(problem)[0]
        pk = problem_key(problem)
        cond = (b.device == device) & (b.family == family) & (b.skeleton == skel)
        if software is not None:
            cond = cond & (b.software == software)
        with self._read() as conn:
            rows = conn.execute(sa.select(best_table).where(cond)).mappings().all()
        out = []
        for r in rows:
            if software is not None and r["problem"] == pk:
                continue
            d = bucket_distance(problem, json.loads(r["problem"]))
            if d is not None:
                out.append((d, _best(r)))
        out.sort(key=lambda x: (x[0], x[1].time_ms))
        return out[:limit]

    def trials(self, device: Optional[str] = None, kernel_key: Optional[str] = None,
               problem: Optional[Mapping[str, Any]] = None, status: Optional[str] = None,
               software: Optional[str] = None, origin: Optional[str] = None, limit: Optional[int] = None
               ) -> list[Trial]:
        t = trials_table.c
        q = sa.select(trials_table).order_by(t.id)
        for col, val in ((t.device, device), (t.kernel_key, kernel_key), (t.status, status),
                         (t.software, software), (t.origin, origin)):
            if val is not None:
                q = q.where(col == val)
        if problem is not None:
            q = q.where(t.problem == problem_key(problem))
        if limit:
            q = q.limit(limit)
        with self._read() as conn:
            return [Trial.from_row(r) for r in conn.execute(q).mappings()]

    def count(self, **filters) -> int:
        t = trials_table.c
        q = sa.select(sa.func.count()).select_from(trials_table)
        for k, v in filters.items():
            q = q.where(getattr(t, k) == v)
        with self._read() as conn:
            return conn.execute(q).scalar_one()

    def all_best(self) -> list[Best]:
        with self._read() as conn:
            return [_best(r) for r in conn.execute(sa.select(best_table).order_by(best_table.c.id)).mappings()]

    def summary(self) -> list[dict[str, Any]]:
        """One row per (device, kernel, problem): trial counts and the best time."""
        t = trials_table.c
        q = sa.select(t.device, t.kernel_name, t.kernel_key, t.problem, t.status, sa.func.count(),
                      sa.func.min(t.time_ms)).group_by(t.device, t.kernel_name, t.kernel_key, t.problem, t.status)
        out: dict[tuple, dict] = {}
        with self._read() as conn:
            for dev, name, key, prob, status, n, tmin in conn.execute(q):
                row = out.setdefault((dev, key, prob), {"device": dev, "kernel": name, "kernel_key": key,
                                                        "problem": prob, "trials": 0, "ok": 0, "best_ms": None})
                row["trials"] += n
                if status == "ok":
                    row["ok"] += n
                    row["best_ms"] = tmin
        return list(out.values())

    # -- maintenance -----------------------------------------------------------
    def rebuild_best(self) -> None:
        """Recompute the best table from the trials (after import or prune)."""
        def run():
            with self._write() as conn:
                conn.execute(best_table.delete())
                rows = conn.execute(sa.select(trials_table).where(trials_table.c.status == "ok")
                                    .order_by(trials_table.c.id)).mappings().all()
                for r in rows:
                    self._update_best(conn, dict(r))
        _retry(run)

    def prune(self, failed: bool = False, older_than_days: Optional[float] = None,
              other_software: bool = False, keep_best: bool = True) -> int:
        """Delete trials: failed ones, old ones, or those of other software
        versions; the trials behind a best config stay when ``keep_best``."""
        t = trials_table.c
        conds = []
        if failed:
            conds.append(t.status != "ok")
        if older_than_days is not None:
            conds.append(t.created < time.time() - older_than_days * 86400)
        if other_software:
            conds.append(t.software != software_key())
        if not conds:
            return 0
        cond = sa.or_(*conds)
        if keep_best and not other_software:
            cond = cond & t.uid.not_in(sa.select(best_table.c.trial_uid))

        def run():
            with self._write() as conn:
                return conn.execute(trials_table.delete().where(cond)).rowcount
        n = _retry(run)
        self.rebuild_best()
        return n


def _best(r: Mapping[str, Any]) -> Best:
    return Best(r["device"], r["software"], r["kernel_key"], r["kernel_name"], r["backend"], json.loads(r["problem"]),
                json.loads(r["config"]), r["time_ms"], bool(r["tuned"]), r["trial_uid"])


class _Txn:
    """``with _Txn(engine, write) as conn``: one transaction; writes take the
    lock up front on SQLite."""

    def __init__(self, engine: sa.Engine, write: bool):
        self.engine, self.write = engine, write

    def __enter__(self):
        self.conn = self.engine.connect().execution_options(write=self.write)
        self.txn = self.conn.begin()
        return self.conn

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self.txn.commit()
            else:
                self.txn.rollback()
        finally:
            self.conn.close()
        return False


def _retry(fn, attempts: int = 20):
    """Run a write, retrying when another process holds the database or a
    concurrent insert raced ours (unique keys)."""
    delay = 0.05
    for i in range(attempts):
        try:
            return fn()
        except (sa.exc.OperationalError, sa.exc.IntegrityError) as e:
            transient = isinstance(e, sa.exc.IntegrityError) or any(
                w in str(e).lower() for w in ("locked", "busy", "deadlock", "could not serialize"))
            if not transient or i == attempts - 1:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


def _short(e: Exception) -> str:
    s = str(getattr(e, "orig", e) or e)
    return s.splitlines()[0][:300] if s else type(e).__name__


def safe_url(url: str) -> str:
    """The URL with any password hidden (for messages)."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001
        return url


def _braze_version() -> str:
    try:
        return __version__
    except Exception:  # noqa: BLE001
        return "unknown"


# --- the process-wide database ----------------------------------------------
_OPEN: dict[str, TuningDB] = {}
_OPEN_LOCK = threading.Lock()


def open_db(where: Optional[str] = None) -> TuningDB:
    """Open the database at a path or URL (default: :func:`default_url`); raises TuningDBError."""
    return TuningDB.open(default_url(where))


def get_db(tuning_db: Optional[str] = None) -> TuningDB:
    """The process's database for ``tuning_db`` (cached).

    Never raises: a database that cannot be used is reported once (logged
    as an error naming the file and why) and replaced for this process by
    an in-memory one, so the program runs on with defaults and whatever it
    measures now; the faulty file is not modified.
    """
    url = default_url(tuning_db)
    with _OPEN_LOCK:
        db = _OPEN.get(url)
        if db is None:
            try:
                db = TuningDB.open(url)
            except TuningDBError as e:
                log.error("braze: %s", e)
                mem = TuningDB.open("sqlite://")
                mem.error = str(e)
                mem.url = url
                db = mem
            _OPEN[url] = db
        return db


def forget_open() -> None:
    """Close the cached databases (tests, or after moving a file)."""
    with _OPEN_LOCK:
        for db in _OPEN.values():
            db.close()
        _OPEN.clear()


__all__ = ["TuningDB", "TuningDBError", "Trial", "Best", "STATUSES", "SCHEMA_VERSION", "get_db", "open_db",
           "default_url", "software_key", "forget_open", "config_json"]
