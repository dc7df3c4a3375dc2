"""braze's options, re-exported: ``braze.Options`` (defined in ``autotune/options.py``,
the lowest layer that reads them)."""
from braze.autotune.options import BACKENDS, Options  # noqa: F401
