"""Results page section: the picked campaigns' declared sequential questions, each with its
state, e-value and the trials it saved (protocols.report_questions, the same section as
`evalfleet report`). Shown only when a picked campaign declared a question.
"""

from __future__ import annotations

import streamlit as st

from dashboard import data
from orchestrator.store.questions import question_lines
from protocols.report_questions import NOTE, QuestionLine, rows


@st.cache_data(ttl=data.SHORT_TTL, show_spinner=False)
def _lines(url: str, ids: tuple[int, ...]) -> list[QuestionLine]:
    with data.store().read() as s:
        return question_lines(s, list(ids))


def render(ids: tuple[int, ...], blind: bool) -> None:
    lines = _lines(data.database_url(), ids)
    if not lines:
        return
    st.subheader("Declared questions (sequential)")
    st.dataframe(rows(lines, blind), hide_index=True)
    st.caption(NOTE)
