"""braze's release (kept apart so lower layers can name it without importing the API)."""
__version__ = "0.1.0"
