"""Optional packages: without onnx, onnxscript or tensorboard, one line says what to install."""
import sys

import pytest

from dlcore import tblog
from dlcore.config import ConfigError
from dlcore.export import export_onnx_bytes


@pytest.mark.parametrize("package", ["onnx", "onnxscript"])
def test_onnx_export_without_its_package_says_which_to_install(package, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, package, None)     # what a missing package looks like
    with pytest.raises(ConfigError, match=f"the {package} package is not installed"):
        export_onnx_bytes(tmp_path)


def test_tensorboard_is_reported_unavailable_without_its_package(monkeypatch):
    assert tblog.available() == (True, "")
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    ok, why = tblog.available()
    assert not ok and why.startswith("ModuleNotFoundError")
