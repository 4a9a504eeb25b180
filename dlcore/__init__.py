"""dlcore: the engine of the dashboard. Datasets, models, training, evaluation and saved runs.

No streamlit here: pages call these functions and render what they return.
"""
from .config import ConfigError, default_config, resolve_config

__all__ = ["ConfigError", "default_config", "resolve_config"]
