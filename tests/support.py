"""Test helpers: a campaign in a store, episodes with labels, without any robot."""

from __future__ import annotations

from orchestrator.store.campaigns import PolicySpec, create_campaign, register_policy
from orchestrator.store.db import Store
from protocols.loader import load_protocol, resolve_protocol_path


def make_campaign(
    store: Store,
    *,
    name: str = "c1",
    protocol: str = "smoke",
    policies: tuple[str, ...] = ("alpha", "beta"),
    trials: int = 2,
    seed: int = 7,
    priority: int = 0,
) -> int:
    loaded = load_protocol(resolve_protocol_path(protocol))
    with store.write() as s:
        for p in policies:
            register_policy(s, PolicySpec(name=p, kind="random"))
        c = create_campaign(
            s,
            name=name,
            loaded=loaded,
            policy_names=list(policies),
            trials_per_task=trials,
            seed=seed,
            priority=priority,
        )
        return c.id
