"""The Episode page plots the applied actions in whatever space the episode used, with the
arm's own dimension names (dashboard/charts.py; pure pandas/Altair, no Streamlit)."""

from __future__ import annotations

import pandas as pd

from dashboard.charts import action_chart, action_long, action_names

JOINT_CAPS = {"spaces": {"action": {
    "kind": "joint_position", "names": ["j1", "j2", "j3", "j4", "j5", "j6", "gripper"],
    "units": ["rad"] * 6 + ["1"]}}}


def _steps(space: str, vectors: list[list[float]], ee: bool) -> pd.DataFrame:
    rows = []
    for i, v in enumerate(vectors):
        row = {"idx": i, "action": v, "action_space": space, "chunk_id": i // 2}
        for k, c in enumerate(("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")):
            row[c] = v[k] if ee else None
        rows.append(row)
    return pd.DataFrame(rows)


def test_joint_space_uses_the_arms_declared_names_and_units() -> None:
    df = _steps("joint_position[7]", [[0.1 * k] * 6 + [1.0] for k in range(4)], ee=False)
    long = action_long(df, JOINT_CAPS)
    assert set(long["dimension"]) == {"j1", "j2", "j3", "j4", "j5", "j6", "gripper"}
    assert len(long) == 4 * 7
    assert set(long[long["dimension"] == "j3"]["unit"]) == {"rad"}
    assert list(long[long["dimension"] == "j2"]["value"]) == [0.0, 0.1, 0.2, 0.30000000000000004]
    assert list(long[long["dimension"] == "j1"]["chunk"]) == [0, 0, 1, 1]
    action_chart(long).to_dict()  # a valid Vega-Lite spec


def test_unknown_arm_gets_generic_names_and_ee_delta_gets_rt2_names() -> None:
    assert action_names("joint_velocity[8]", None) == ([f"a{i}" for i in range(8)], [""] * 8)
    names, units = action_names("ee_delta[7]", None)
    assert names[0] == "dx" and units[3] == "rad"
    # another space than the arm declares now: never mislabelled with the arm's names
    assert action_names("joint_velocity[7]", JOINT_CAPS)[0][0] == "a0"


def test_steps_recorded_before_the_full_vector_fall_back_to_the_rt2_columns() -> None:
    df = _steps("ee_delta[7]", [[0.01, 0, 0, 0, 0, 0, 1.0]] * 3, ee=True).drop(columns=["action"])
    long = action_long(df, None)
    assert len(long) == 21 and set(long[long["dimension"] == "dx"]["value"]) == {0.01}
    assert action_long(df.iloc[0:0], None).empty
