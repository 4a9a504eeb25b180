"""The server listens on localhost only, with XSRF protection, a small upload limit and no file watcher."""
import os

from streamlit import config

from conftest import ROOT


def test_effective_server_config(monkeypatch):
    monkeypatch.chdir(ROOT)          # streamlit reads .streamlit/config.toml from the working dir
    config.get_config_options(force_reparse=True)
    try:
        assert config.get_option("server.address") == "localhost"
        assert config.get_option("server.enableXsrfProtection") is True
        assert config.get_option("server.maxUploadSize") <= 10
        assert config.get_option("browser.gatherUsageStats") is False
        # no watching of the app folder (and the .venv in it) for source changes
        assert config.get_option("server.fileWatcherType") == "none"
        assert config.get_where_defined("server.address") == os.path.join(
            str(ROOT), ".streamlit", "config.toml")
    finally:
        config.get_config_options(force_reparse=True)
