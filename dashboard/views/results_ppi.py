"""Results page section: a success detector's prediction-powered estimates beside the humans'
and its own (protocols.report_ppi, the same section as `evalfleet report --detector`).

Shown only when the picked campaigns have auto labels; a detector selector picks whose.
"""

from __future__ import annotations

import streamlit as st

from dashboard import data
from protocols.report_ppi_render import agreement_records, records, section_notes


def render(ids: tuple[int, ...], blind: bool) -> None:
    names = data.detectors(ids)
    if not names:
        return
    st.subheader("Success detector: prediction-powered estimates")
    detector = st.selectbox("Detector", names, key="res_detector",
                            help="Its auto labels on every episode, corrected by the humans' "
                                 "random audit (docs/statistics.md).")
    try:
        ppi = data.ppi_report(ids, detector, blind)
    except ValueError as e:  # e.g. a campaign without an audit rate
        st.info(str(e))
        return
    notes = section_notes(ppi)
    st.caption(notes[0] + " The filters above do not apply to this section.")
    for line in notes[1:]:
        if line.startswith("WARNING "):
            st.warning(line.removeprefix("WARNING "))
        else:
            st.caption(line)
    st.dataframe(records(ppi), hide_index=True)
    st.caption(f"{detector} against the human majority on the audited episodes: confusion "
               "matrix and Cohen's kappa.")
    st.dataframe(agreement_records(ppi), hide_index=True)
