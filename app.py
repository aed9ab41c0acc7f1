"""EnvNet Sound Lab: the entry point (`streamlit run app.py`): page set-up, the sidebar's model picker
on every page, and the navigation over pages/.
"""

from __future__ import annotations

import streamlit as st

from pages._ui import render_sidebar, warm_default_model

st.set_page_config(page_title="EnvNet Sound Lab", page_icon="🔊", layout="wide")


pages = [
    st.Page("pages/classify.py", title="Classify", icon=":material/hearing:", default=True),
    st.Page("pages/live.py", title="Live", icon=":material/mic:"),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/filters.py", title="Filters", icon=":material/tune:"),
    st.Page("pages/how_it_works.py", title="How it works", icon=":material/school:"),
]
page = st.navigation(pages)
render_sidebar(page.url_path)  # the sidebar knows the page: the Train page draws a run's progress itself
warm_default_model()  # once per server, in the background: the first classification is then fast
page.run()
