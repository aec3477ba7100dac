"""Policies that campaigns evaluate, behind one batched interface (see docs/policies.md).

Light imports only: the VLA adapter (torch, transformers) loads on first use through the
registry or `from policies.vla import VLAPolicy`.
"""

from policies.base import (
    Policy,
    PolicyBatchResult,
    PolicyInput,
    PolicyMetadata,
    PolicyOutput,
)
from policies.registry import (
    KINDS,
    PolicyConfig,
    PolicyConfigError,
    build_policy,
    load_policy_config,
)

__all__ = [
    "KINDS",
    "Policy",
    "PolicyBatchResult",
    "PolicyConfig",
    "PolicyConfigError",
    "PolicyInput",
    "PolicyMetadata",
    "PolicyOutput",
    "build_policy",
    "load_policy_config",
]
