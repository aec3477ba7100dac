"""Blind codes in the store: random per campaign, unique store-wide (both backends), and the
upgrade of a store whose old seed-derived codes repeat across campaigns (migration 0004)."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from orchestrator.store import campaigns as store_campaigns
from orchestrator.store import migrate
from orchestrator.store.db import Store, make_engine
from orchestrator.store.models import CampaignPolicy, Event
from protocols.planning import BLIND_CODE_PATTERN
from tests.support import make_campaign


def _codes(store: Store, campaign_id: int | None = None) -> list[str]:
    with store.read() as s:
        stmt = select(CampaignPolicy.blind_code).order_by(CampaignPolicy.id)
        if campaign_id is not None:
            stmt = stmt.where(CampaignPolicy.campaign_id == campaign_id)
        return list(s.scalars(stmt))


def test_two_campaigns_with_the_default_seed_get_different_codes(store: Store) -> None:
    first = make_campaign(store, name="first", policies=("alpha", "beta"), seed=0, trials=1)
    second = make_campaign(store, name="second", policies=("alpha", "beta"), seed=0, trials=1)
    a, b = _codes(store, first), _codes(store, second)
    assert len(a) == len(b) == 2
    assert not set(a) & set(b), (a, b)  # learning one campaign's codes unblinds no other
    assert all(BLIND_CODE_PATTERN.match(c) for c in a + b)


def test_codes_are_unique_in_the_whole_store(store: Store) -> None:
    for i in range(12):
        make_campaign(store, name=f"c{i}", policies=("alpha", "beta", "gamma"), seed=0, trials=1)
    codes = _codes(store)
    assert len(codes) == 36 and len(set(codes)) == 36


def test_the_store_refuses_a_repeated_code(store: Store) -> None:
    first = make_campaign(store, name="first", policies=("alpha",), trials=1)
    second = make_campaign(store, name="second", policies=("beta",), trials=1)
    (code,) = _codes(store, first)
    with pytest.raises(IntegrityError), store.write() as s:
        row = s.scalar(select(CampaignPolicy).where(CampaignPolicy.campaign_id == second))
        row.blind_code = code
        s.flush()
    assert _codes(store, second) != [code]


def _source(*codes: str):  # type: ignore[no-untyped-def]
    """A code source that yields these codes first, then seeded random characters."""
    first = itertools.chain.from_iterable(c[2:] for c in codes)
    rng = random.Random(1)
    return lambda alphabet: next(first, None) or rng.choice(alphabet)


def _create(store: Store, name: str, policies: tuple[str, ...], choose) -> int:  # type: ignore[no-untyped-def]
    from protocols.loader import load_protocol, resolve_protocol_path

    loaded = load_protocol(resolve_protocol_path("smoke"))
    with store.write() as s:
        for p in policies:
            store_campaigns.register_policy(s, store_campaigns.PolicySpec(name=p, kind="random"))
        return store_campaigns.create_campaign(
            s, name=name, loaded=loaded, policy_names=list(policies), trials_per_task=1, seed=0,
            choose=choose).id


def test_a_drawn_code_already_in_the_store_is_redrawn(store: Store) -> None:
    first = _create(store, "first", ("alpha",), _source("P-2345"))
    assert _codes(store, first) == ["P-2345"]
    second = _create(store, "second", ("alpha",), _source("P-2345"))  # draws the taken code
    (code,) = _codes(store, second)
    assert code != "P-2345" and BLIND_CODE_PATTERN.match(code)


def test_a_code_taken_at_the_same_moment_is_redrawn(store: Store,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The pre-check saw the code free, but another transaction stored it first: the unique
    constraint fires inside a savepoint and the code is redrawn; the campaign still lands."""
    first = _create(store, "first", ("alpha",), _source("P-2345"))
    real = store_campaigns.allocate_blind_codes
    calls = []

    def stale_allocation(s, names, **kw):  # type: ignore[no-untyped-def]
        calls.append(kw.get("avoid"))
        if len(calls) == 1:  # as if the pre-check ran before the other campaign committed
            return {names[0]: "P-2345"}
        return real(s, names, **kw)

    monkeypatch.setattr(store_campaigns, "allocate_blind_codes", stale_allocation)
    second = _create(store, "second", ("beta",), _source())
    (code,) = _codes(store, second)
    assert code != "P-2345" and _codes(store, first) == ["P-2345"]
    assert len(calls) == 2 and "P-2345" in calls[1]
    with store.read() as s:  # the whole campaign landed once, with all its trials
        assert s.scalar(select(func.count()).select_from(CampaignPolicy)) == 2


# --- upgrading a store from before 0004 -------------------------------------------------------


def test_upgrade_from_0002_recodes_repeated_codes(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        migrate.upgrade(engine, "0002")
        now = datetime.now(UTC)
        with engine.begin() as c:
            c.execute(text("INSERT INTO protocols (id, name, version, source_text, checksum, "
                           "created_at) VALUES (1, 'smoke', '1', 'x', 'abc', :t)"), {"t": now})
            for pid, name in ((1, "zebra-policy-xq"), (2, "okapi-policy-vw")):
                c.execute(text("INSERT INTO policies (id, name, version, kind, config, "
                               "created_at) VALUES (:i, :n, '1', 'random', '{}', :t)"),
                          {"i": pid, "n": name, "t": now})
            for cid in (1, 2, 3):  # three campaigns with the default seed: the same codes
                c.execute(text("INSERT INTO campaigns (id, name, protocol_id, status, priority, "
                               "seed, trials_per_task, created_at, updated_at) VALUES "
                               "(:i, :n, 1, 'done', 0, 0, 1, :t, :t)"),
                          {"i": cid, "n": f"c{cid}", "t": now})
                for pos, (pid, code) in enumerate(((1, "P-58G5"), (2, "P-KX3M"))):
                    c.execute(text("INSERT INTO campaign_policies (campaign_id, policy_id, "
                                   "blind_code, position) VALUES (:c, :p, :b, :o)"),
                              {"c": cid, "p": pid, "b": code, "o": pos})
        migrate.upgrade(engine)
        store = Store(engine)
        with store.read() as s:
            rows = s.execute(select(CampaignPolicy.campaign_id, CampaignPolicy.blind_code)
                             .order_by(CampaignPolicy.id)).all()
            changed = s.execute(select(Event.campaign_id, Event.payload).where(
                Event.kind == "blind_code_changed").order_by(Event.id)).all()
        codes = [code for _, code in rows]
        assert len(set(codes)) == 6  # unique store-wide now
        assert codes[:2] == ["P-58G5", "P-KX3M"]  # the oldest campaign keeps its codes
        assert all(BLIND_CODE_PATTERN.match(c) for c in codes)
        assert sorted(cid for cid, _ in changed) == [2, 2, 3, 3]  # each change audited
        assert {(p["old"], p["new"]) for _, p in changed} == {
            (old, new) for old, new in zip(["P-58G5", "P-KX3M"] * 2, codes[2:], strict=True)}
        migrate.downgrade(engine, "0003")  # and back: the constraint goes, the data stays
        migrate.upgrade(engine)
        assert len(set(_codes(Store(engine)))) == 6
    finally:
        engine.dispose()
