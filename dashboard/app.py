"""evalfleet dashboard: `evalfleet dashboard` (or `streamlit run dashboard/app.py`).

Pages, one module each under dashboard/views/: Label (blind), Results, Campaigns, Fleet,
Episode. The store is the orchestrator's: $EVALFLEET_DATABASE_URL, or the SQLite file under
$EVALFLEET_HOME. (The folder is not called `pages/`: Streamlit takes a `pages/` folder beside
the entry script for its older directory navigation until st.navigation has run once, so a
first visitor deep-linking to /results would get a file list as navigation.)
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # `streamlit run dashboard/app.py` from a plain checkout
    sys.path.insert(0, str(_ROOT))

import streamlit as st
from sqlalchemy.exc import OperationalError

from orchestrator.store.db import StoreError

st.set_page_config(page_title="evalfleet", page_icon=":material/precision_manufacturing:",
                   layout="wide")

PAGES = [
    st.Page("views/label.py", title="Label", icon=":material/rate_review:", url_path="label",
            default=True),
    st.Page("views/results.py", title="Results", icon=":material/bar_chart:", url_path="results"),
    st.Page("views/campaigns.py", title="Campaigns", icon=":material/playlist_play:",
            url_path="campaigns"),
    st.Page("views/fleet.py", title="Fleet", icon=":material/smart_toy:", url_path="fleet"),
    st.Page("views/episode.py", title="Episode", icon=":material/movie:", url_path="episode"),
]

# Each page draws the identity box itself (ui.start): elements drawn here, outside the page,
# would share the page's sidebar slots under AppTest.
page = st.navigation(PAGES)
try:
    page.run()
except StoreError as e:  # no schema yet / schema behind: the message says which command to run
    st.error(f"The results store is not usable: {e}")
except OperationalError as e:
    st.error(f"Cannot reach the results database ({e.orig}). Check EVALFLEET_DATABASE_URL "
             "(or EVALFLEET_HOME for SQLite) and that the server is up, then reload.")
