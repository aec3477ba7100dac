"""`evalfleet policy register|list|show` on a store (SQLite, and PostgreSQL when configured):
a registered name + version never changes under a campaign; bad input gets one line, exit 2,
and writes nothing; --force only for a policy no episode has used, and it is audited."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.store.campaigns import PolicySpec, register_policy
from orchestrator.store.db import Store
from orchestrator.store.models import CampaignPolicy, Episode, Event, Policy, Trial
from orchestrator.weights import checksum_path
from policies.registration import PolicyChangeRefused
from tests.support import make_campaign

runner = CliRunner()


def cli(*args: str) -> tuple[int, str]:
    res = runner.invoke(app, list(args))
    return res.exit_code, res.output


def lines(out: str) -> list[str]:
    return [ln for ln in out.strip().splitlines() if ln.strip()]


@pytest.fixture
def cli_db(db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """`evalfleet` pointed at a fresh, migrated store on each backend."""
    from orchestrator.config import get_settings

    monkeypatch.setenv("EVALFLEET_DATABASE_URL", db_url)
    get_settings.cache_clear()
    code, out = cli("db", "upgrade")
    assert code == 0, out
    return db_url


def snapshot(url: str) -> tuple:
    """Everything `policy register` may touch: the policies table and the audit log."""
    with Store.open(url) as store, store.read() as s:
        pols = tuple(
            (p.id, p.name, p.version, p.kind, p.checkpoint_uri, repr(p.config), p.weights_checksum)
            for p in s.scalars(select(Policy).order_by(Policy.id))
        )
        events = s.scalar(select(func.count()).select_from(Event))
    return pols, events


def add_episodes(url: str, policy: str, n: int) -> None:
    """n recorded episodes of `policy` (as a campaign run would leave them)."""
    with Store.open(url) as store, store.write() as s:
        trials = s.scalars(
            select(Trial.id)
            .join(CampaignPolicy, CampaignPolicy.id == Trial.campaign_policy_id)
            .join(Policy, Policy.id == CampaignPolicy.policy_id)
            .where(Policy.name == policy)
            .order_by(Trial.id)
            .limit(n)
        ).all()
        for tid in trials:
            s.add(Episode(trial_id=tid, status="recorded", counted=True, policy_checksum="c" * 64))
            s.get(Trial, tid).status = "done"


def events(url: str, kind: str) -> list[Event]:
    with Store.open(url) as store, store.read() as s:
        rows = list(s.scalars(select(Event).where(Event.kind == kind).order_by(Event.id)))
        s.expunge_all()
    return rows


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("oracle", "--kind", "orcale"),
         "unknown kind 'orcale' (choose from oracle, vision_heuristic, random, vla, openpi, openvla_rest, or a policy class"),
        (("tiny", "--kind", "vla"), "--kind vla needs --path"),
        (("r", "--kind", "random", "-o", "bogus=1"), "unknown option 'bogus' for kind random"),
        (("r", "--kind", "random", "-o", "scale=7"), "option 'scale' for kind random"),
        (("r", "--kind", "random", "-o", "seed"), "expected key=value"),
        (("o", "--kind", "oracle", "--path", "."), "--kind oracle takes no --path"),
        (("tiny", "--kind", "vla", "--path", "/no/such/dir"), "--path /no/such/dir"),
    ],
)
def test_bad_input_one_line_exit_2_nothing_written(cli_db: str, args, needle) -> None:
    assert cli("policy", "register", "oracle", "--kind", "oracle")[0] == 0
    before = snapshot(cli_db)
    code, out = cli("policy", "register", *args)
    assert code == 2, out
    assert len(lines(out)) == 1, out
    assert needle in out and "policy register" in out and "Traceback" not in out
    assert snapshot(cli_db) == before


def test_identical_reregistration_is_a_no_op(cli_db: str) -> None:
    code, out = cli("policy", "register", "r", "--kind", "random", "-o", "seed=3")
    assert code == 0 and "registered as #" in out, out
    before = snapshot(cli_db)
    code, out = cli("policy", "register", "r", "--kind", "random", "-o", "seed=03")
    assert code == 0 and "already registered" in out and "unchanged" in out, out
    assert snapshot(cli_db) == before
    # what tests/support.py and the demo do: the same spec again and again
    make_campaign(Store.open(cli_db), name="a", policies=("alpha", "beta"))
    make_campaign(Store.open(cli_db), name="b", policies=("alpha", "beta"))
    code, out = cli("policy", "register", "alpha", "--kind", "random")
    assert code == 0 and "unchanged" in out, out


def test_a_used_policy_cannot_change_force_or_not(cli_db: str) -> None:
    make_campaign(Store.open(cli_db), name="c1", policies=("oracle", "beta"))
    add_episodes(cli_db, "oracle", 3)
    before = snapshot(cli_db)
    for extra in ((), ("--force",)):
        code, out = cli("policy", "register", "oracle", "--kind", "oracle", *extra)
        assert code == 1, out
        assert len(lines(out)) == 1, out
        assert "immutable" in out and "3 episode(s)" in out and "new --version" in out
        assert snapshot(cli_db) == before
    # a new version is a new row; the episodes stay with the version that ran them
    code, out = cli("policy", "register", "oracle", "--kind", "oracle", "--version", "2")
    assert code == 0 and "registered as #" in out, out
    with Store.open(cli_db) as store, store.read() as s:
        rows = {p.version: p.kind for p in s.scalars(select(Policy).where(Policy.name == "oracle"))}
    assert rows == {"1": "random", "2": "oracle"}  # make_campaign registers kind random


def test_any_existing_name_version_is_refused_without_force(cli_db: str) -> None:
    assert cli("policy", "register", "p", "--kind", "oracle")[0] == 0
    before = snapshot(cli_db)
    code, out = cli("policy", "register", "p", "--kind", "oracle", "-o", "noise=0.01")
    assert code == 1 and len(lines(out)) == 1, out
    assert "option noise" in out and "--force" in out and "new --version" in out
    assert snapshot(cli_db) == before


def test_force_replaces_an_unused_policy_and_is_audited(cli_db: str) -> None:
    make_campaign(Store.open(cli_db), name="planned", policies=("p", "q"))  # no episode yet
    code, out = cli("policy", "register", "p", "--kind", "oracle", "--force", "--by", "ann")
    assert code == 0 and "replaced" in out and "kind random -> oracle" in out, out
    with Store.open(cli_db) as store, store.read() as s:
        row = s.scalar(select(Policy).where(Policy.name == "p"))
        assert (row.kind, row.config["kind"]) == ("oracle", "oracle")
    [ev] = events(cli_db, "policy_replaced")
    assert ev.actor == "ann" and ev.campaign_id is not None
    assert ev.payload["before"]["kind"] == "random" and ev.payload["after"]["kind"] == "oracle"
    assert ev.payload["campaigns"] == ["planned"]
    # an unlisted policy: one audit entry without a campaign
    assert cli("policy", "register", "lone", "--kind", "random")[0] == 0
    code, out = cli("policy", "register", "lone", "--kind", "random", "-o", "seed=9", "--force")
    assert code == 0, out
    assert [e.campaign_id for e in events(cli_db, "policy_replaced")][-1] is None


def test_a_policy_with_a_running_trial_cannot_be_forced(cli_db: str) -> None:
    make_campaign(Store.open(cli_db), name="live", policies=("p", "q"))
    with Store.open(cli_db) as store, store.write() as s:
        trial = s.scalar(select(Trial).join(CampaignPolicy).join(Policy)
                         .where(Policy.name == "p").limit(1))
        trial.status, trial.lease_holder = "leased", "orch-1"
    code, out = cli("policy", "register", "p", "--kind", "oracle", "--force")
    assert code == 1 and "trial(s) of it are running" in out, out


def test_checkpoint_checksum_is_taken_at_registration(cli_db: str, tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "weights.bin").write_bytes(b"v1")
    code, out = cli("policy", "register", "tiny", "--kind", "vla", "--path", str(ckpt),
                    "-o", "device=cpu")
    assert code == 0, out
    with Store.open(cli_db) as store, store.read() as s:
        row = s.scalar(select(Policy).where(Policy.name == "tiny"))
        assert row.weights_checksum == checksum_path(ckpt)
        assert row.config == {"kind": "vla", "path": str(ckpt.resolve()),
                              "options": {"device": "cpu"}}
    assert cli("policy", "register", "tiny", "--kind", "vla", "--path", str(ckpt),
               "-o", "device=cpu")[1].count("unchanged") == 1
    (ckpt / "weights.bin").write_bytes(b"v2")  # new weights under the same version: refused
    code, out = cli("policy", "register", "tiny", "--kind", "vla", "--path", str(ckpt),
                    "-o", "device=cpu")
    assert code == 1 and "weights" in out and "new --version" in out, out


def test_store_level_registration_is_immutable_too(store: Store) -> None:
    make_campaign(store, name="c", policies=("a", "b"))
    with pytest.raises(PolicyChangeRefused), store.write() as s:
        register_policy(s, PolicySpec(name="a", kind="oracle"))
    with store.write() as s:  # identical: fine, whatever subset of the config is given
        register_policy(s, PolicySpec(name="a", kind="random",
                                      config={"kind": "random", "options": {}}))


def test_list_and_show(cli_db: str) -> None:
    make_campaign(Store.open(cli_db), name="c1", policies=("alpha", "beta"))
    add_episodes(cli_db, "alpha", 2)
    assert cli("policy", "register", "alpha", "--kind", "random", "--version", "2")[0] == 0
    code, out = cli("policy", "list")
    assert code == 0, out
    for col in ("name", "version", "kind", "checksum", "campaigns", "episodes"):
        assert col in out
    alpha1 = next(ln for ln in lines(out) if "alpha" in ln and " 1 " in ln)
    assert alpha1.split("│")[-2].strip() == "2" and alpha1.split("│")[-3].strip() == "1"
    code, out = cli("policy", "show", "alpha", "--version", "1")
    assert code == 0, out
    assert "c1" in out and '"kind": "random"' in out and "episodes: 2" in out
    assert "versions: 1, 2" in out
    code, out = cli("policy", "show", "alpha")  # the newest version
    assert code == 0 and "version 2" in out, out
    code, out = cli("policy", "show", "alpha", "--version", "9")
    assert code == 1 and "versions: 1, 2" in out and len(lines(out)) == 1
    code, out = cli("policy", "show", "nope")
    assert code == 1 and "policy list" in out


def test_a_structured_option_comes_from_a_yaml_file(cli_db: str, tmp_path: Path) -> None:
    """-o key=@file.yaml: the openpi kind's generic mapping registered from the CLI."""
    mapping = tmp_path / "sim.yaml"
    mapping.write_text(
        "images: {observation/image: {camera: main, role: external}}\n"
        "state: {observation/state: [ee_x, ee_y, ee_z, ee_roll, ee_pitch, ee_yaw, gripper]}\n"
        "actions: {space: ee_delta, dim: 7, gripper: open_is_1}\n")
    code, out = cli("policy", "register", "remote", "--kind", "openpi", "-o",
                    "url=ws://127.0.0.1:8000", "-o", "preset=generic", "-o",
                    f"mapping=@{mapping}")
    assert code == 0, out
    with Store.open(cli_db) as store, store.read() as s:
        pol = s.scalars(select(Policy).where(Policy.name == "remote")).one()
        assert pol.config["options"]["mapping"]["actions"]["dim"] == 7
    code, out = cli("policy", "register", "remote2", "--kind", "openpi", "-o",
                    f"mapping=@{tmp_path / 'missing.yaml'}")
    assert code == 2 and len(lines(out)) == 1 and "cannot read" in out, out
