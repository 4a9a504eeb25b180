"""The dashboard's entry: page config, navigation over the pages, and the shared sidebar.

Start it with `streamlit run app.py`. Runs live in $DLCORE_RUNS (default runs/), full
datasets in $DLCORE_DATA (default data/).
"""
import streamlit as st

from pages.common import ROUTED_KEY, init_state, refuse_foreign_host, sidebar

# the tab icon is an emoji, drawn by the browser: a ":material/...:" one is fetched from a font
# server on every page load (the in-page icons come from a font Streamlit ships)
st.set_page_config(page_title="DL dashboard", page_icon="🧠", layout="wide")
refuse_foreign_host()       # before anything from the runs directory is read
init_state()
st.session_state[ROUTED_KEY] = True

PAGES = [
    st.Page("pages/data.py", title="Data", icon=":material/dataset:", default=True),
    st.Page("pages/model.py", title="Model", icon=":material/account_tree:"),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/evaluate.py", title="Evaluate", icon=":material/analytics:"),
    st.Page("pages/draw.py", title="Draw", icon=":material/draw:"),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare:"),
]

page = st.navigation(PAGES)
sidebar()
page.run()
