"""braze.autotune: choosing and tuning kernel configs, and remembering them.

- ``space.py``: search spaces as data (knobs, conditional knobs, constraints, defaults)
- ``measure.py``: compile, check against the reference, time (CPU / CUDA events / CUDA graphs),
  in an isolated worker process (``worker.py``), never pickling a kernel (``recipe.py``)
- ``tuner.py``: the Optuna search (TPE, warm starts, budgets, failures taught to the sampler)
- ``db.py``, ``dbtools.py``: the tuning database (SQLite or any SQLAlchemy URL), export/import/merge
- ``select.py``: the policy the runtime asks (database, search, measured default, default)
- ``distributed.py``, ``model.py``: tuning a whole model, with several workers sharing studies
"""
