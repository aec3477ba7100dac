"""analyst views: one row per counted episode with its resolved outcome; success per category

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25

The outcome rule is the same as protocols.stats.resolve_outcome (tested against each other):
human labels override the simulator's; the majority of votes wins; a tie is 'disputed' and is
never counted as success or failure; no label at all is 'unlabeled'.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EPISODE_OUTCOMES = """
CREATE VIEW v_episode_outcomes AS
WITH votes AS (
    SELECT episode_id,
        SUM(CASE WHEN source = 'human' AND success THEN 1 ELSE 0 END) AS human_yes,
        SUM(CASE WHEN source = 'human' AND NOT success THEN 1 ELSE 0 END) AS human_no,
        SUM(CASE WHEN source = 'sim' AND success THEN 1 ELSE 0 END) AS sim_yes,
        SUM(CASE WHEN source = 'sim' AND NOT success THEN 1 ELSE 0 END) AS sim_no,
        AVG(CASE WHEN source = 'human' THEN progress END) AS human_progress
    FROM labels
    GROUP BY episode_id
)
SELECT
    e.id AS episode_id,
    t.campaign_id AS campaign_id,
    c.name AS campaign,
    cp.policy_id AS policy_id,
    p.name AS policy,
    p.version AS policy_version,
    cp.blind_code AS blind_code,
    t.id AS trial_id,
    tk.key AS task_key,
    tk.skill AS skill,
    tk.split AS split,
    tk.category AS category,
    tk.difficulty AS difficulty,
    e.robot_id AS robot_id,
    r.name AS robot,
    r.station AS station,
    e.started_at AS started_at,
    e.ended_at AS ended_at,
    e.step_count AS step_count,
    COALESCE(v.human_yes, 0) + COALESCE(v.human_no, 0) AS human_votes,
    COALESCE(v.sim_yes, 0) + COALESCE(v.sim_no, 0) AS sim_votes,
    CASE
        WHEN COALESCE(v.human_yes, 0) + COALESCE(v.human_no, 0) > 0 THEN
            CASE WHEN v.human_yes > v.human_no THEN 'success'
                 WHEN v.human_no > v.human_yes THEN 'failure'
                 ELSE 'disputed' END
        WHEN COALESCE(v.sim_yes, 0) + COALESCE(v.sim_no, 0) > 0 THEN
            CASE WHEN v.sim_yes > v.sim_no THEN 'success'
                 WHEN v.sim_no > v.sim_yes THEN 'failure'
                 ELSE 'disputed' END
        ELSE 'unlabeled'
    END AS outcome,
    CASE
        WHEN COALESCE(v.human_yes, 0) + COALESCE(v.human_no, 0) > 0 THEN 'human'
        WHEN COALESCE(v.sim_yes, 0) + COALESCE(v.sim_no, 0) > 0 THEN 'sim'
    END AS outcome_source,
    v.human_progress AS progress
FROM episodes e
JOIN trials t ON t.id = e.trial_id
JOIN campaigns c ON c.id = t.campaign_id
JOIN campaign_policies cp ON cp.id = t.campaign_policy_id
JOIN policies p ON p.id = cp.policy_id
JOIN tasks tk ON tk.id = t.task_id
LEFT JOIN robots r ON r.id = e.robot_id
LEFT JOIN votes v ON v.episode_id = e.id
WHERE e.counted
"""

SUCCESS_BY_CATEGORY = """
CREATE VIEW v_success_by_category AS
SELECT
    campaign_id, campaign, policy_id, policy, blind_code, category, difficulty,
    SUM(CASE WHEN outcome IN ('success', 'failure') THEN 1 ELSE 0 END) AS n,
    SUM(CASE WHEN outcome = 'success' THEN 1 ELSE 0 END) AS successes,
    SUM(CASE WHEN outcome = 'disputed' THEN 1 ELSE 0 END) AS disputed,
    SUM(CASE WHEN outcome = 'unlabeled' THEN 1 ELSE 0 END) AS unlabeled,
    CAST(SUM(CASE WHEN outcome = 'success' THEN 1 ELSE 0 END) AS REAL)
        / NULLIF(SUM(CASE WHEN outcome IN ('success', 'failure') THEN 1 ELSE 0 END), 0)
        AS success_rate
FROM v_episode_outcomes
GROUP BY campaign_id, campaign, policy_id, policy, blind_code, category, difficulty
"""


def upgrade() -> None:
    op.execute(EPISODE_OUTCOMES)
    op.execute(SUCCESS_BY_CATEGORY)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS v_success_by_category")
    op.execute("DROP VIEW IF EXISTS v_episode_outcomes")
