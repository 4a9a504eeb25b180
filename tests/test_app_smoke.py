"""Every page renders from a fresh session without an exception."""
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parent.parent / "app.py")

PAGES = ["pages/data.py", "pages/model.py", "pages/train.py", "pages/evaluate.py",
         "pages/draw.py", "pages/compare.py"]


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_from_fresh_session(page, tiny_runs):
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    at.switch_page(page).run()
    assert not at.exception, at.exception
