"""Every status, event kind and termination reason the store holds, as StrEnums (pure).

The stored strings are the enum values, unchanged: a member compares equal to its string, so
rows written before these enums existed read back as members. Nothing in orchestrator/ or
protocols/ writes or compares one of these as a bare string literal (tests/unit/
test_states_enums.py checks that, and checks the members against the tables' CHECK
constraints). Why an episode aborted is orchestrator.faults.AbortCause.
"""

from __future__ import annotations

from enum import StrEnum


class CampaignStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    DONE = "done"
    INCOMPLETE = "incomplete"  # closed with trials given up or cancelled
    CANCELLED = "cancelled"


class TrialStatus(StrEnum):
    PENDING = "pending"
    LEASED = "leased"
    DONE = "done"
    GIVEN_UP = "given_up"  # its attempt budget was used up
    CANCELLED = "cancelled"  # a person cancelled the campaign
    # its campaign's declared questions were decided before it ran (protocols.sequential):
    # never leased, not counted against the campaign (migration 0012)
    NOT_NEEDED = "not_needed"


class EpisodeStatus(StrEnum):
    RUNNING = "running"
    RECORDED = "recorded"
    ABORTED = "aborted"  # kept for the audit, with its steps and media up to the abort


class RobotStatus(StrEnum):
    UNKNOWN = "unknown"  # not probed yet by the orchestrator holding it
    ONLINE = "online"
    OFFLINE = "offline"
    ESTOPPED = "estopped"  # reachable, e-stop latched


class TerminationReason(StrEnum):
    """Why a recorded episode ended (episodes.terminated_by)."""

    TERMINATE = "terminate"  # the policy said so
    SUCCESS = "success"  # the simulator reported success
    MAX_STEPS = "max_steps"
    TIMEOUT = "timeout"
    # no longer written: a stopped episode is aborted (orchestrator.episode.EpisodeStop);
    # kept because stores written before 0.11 hold it
    STOPPED = "stopped"


class LabelSource(StrEnum):
    HUMAN = "human"
    SIM = "sim"
    AUTO = "auto"  # a success detector (labels.detector_id, detector_checksum; migration 0012)


class QuestionState(StrEnum):
    """campaign_questions.state: where a declared sequential question stands (the values of
    protocols.sequential.Decision)."""

    RUNNING = "running"
    A_BETTER = "a_better"  # threshold questions: the policy is above the threshold
    B_BETTER = "b_better"  # threshold questions: the policy is below the threshold
    NO_DIFFERENCE = "no_difference"
    CAP_REACHED = "cap_reached"


class QuestionKind(StrEnum):
    """campaign_questions.kind (protocols.sequential.QuestionKind)."""

    PAIR = "pair"
    THRESHOLD = "threshold"


class EventKind(StrEnum):
    """events.kind: the audit log's entries."""

    # campaigns (campaign_<status> for every status change)
    CAMPAIGN_CREATED = "campaign_created"
    CAMPAIGN_PENDING = "campaign_pending"
    CAMPAIGN_RUNNING = "campaign_running"
    CAMPAIGN_PAUSED = "campaign_paused"
    CAMPAIGN_DONE = "campaign_done"
    CAMPAIGN_INCOMPLETE = "campaign_incomplete"
    CAMPAIGN_CANCELLED = "campaign_cancelled"
    CAMPAIGN_PRIORITY = "campaign_priority"
    TRIALS_REQUEUED = "trials_requeued"
    # the queue
    LEASE_EXPIRED = "lease_expired"
    EPISODE_STARTED = "episode_started"
    EPISODE_ABORTED = "episode_aborted"
    EPISODE_NOT_COUNTED = "episode_not_counted"
    TRIAL_GAVE_UP = "trial_gave_up"
    # arms (robot_<status> for every status change)
    ARM_LEASED = "arm_leased"
    ARM_LEASE_LOST = "arm_lease_lost"
    ROBOT_UNKNOWN = "robot_unknown"
    ROBOT_ONLINE = "robot_online"
    ROBOT_OFFLINE = "robot_offline"
    ROBOT_ESTOPPED = "robot_estopped"
    SPACE_MISMATCH = "space_mismatch"  # a policy/arm pair that does not fit (runner)
    # operators and safety
    OPERATOR_SETUP_REQUIRED = "operator_setup_required"
    OPERATOR_CONFIRMED = "operator_confirmed"
    ESTOP_REQUESTED = "estop_requested"
    ESTOP_REARMED = "estop_rearmed"
    # policies and labels
    POLICY_REGISTERED = "policy_registered"
    POLICY_REPLACED = "policy_replaced"
    LABEL_SAVED = "label_saved"
    LABEL_UNDONE = "label_undone"
    # sequential questions, success detectors (issue 13)
    QUESTION_DECIDED = "question_decided"  # payload: question id, state, e-value, outcomes
    TRIALS_NOT_NEEDED = "trials_not_needed"  # payload: trial ids no longer leased
    DETECTOR_REGISTERED = "detector_registered"
    AUTO_LABELS_SAVED = "auto_labels_saved"  # payload: detector, episode count

    @classmethod
    def campaign(cls, status: CampaignStatus) -> EventKind:
        return cls(f"campaign_{status.value}")

    @classmethod
    def robot(cls, status: RobotStatus) -> EventKind:
        return cls(f"robot_{status.value}")


def check_values(enum: type[StrEnum], column: str = "status") -> str:
    """The SQL CHECK body that admits exactly the enum's values: `status IN ('a','b')`."""
    return f"{column} IN (" + ",".join(f"'{m.value}'" for m in enum) + ")"
