"""Success detectors on a store (SQLite, and PostgreSQL when configured): `evalfleet detector
register|list` and `evalfleet detect` write auto labels with the detector's identity and
checksum, in whole batches, never touching a human or sim label nor the report's outcomes;
the vlm kind judges the recorded final frames with a tiny model built from a config; the
remote kind POSTs them to an HTTP server (a fake one, in-process)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.detectors.base import DetectorError, DetectorKind
from orchestrator.detectors.build import build_detector, detector_spec
from orchestrator.detectors.run import label_campaign
from orchestrator.detectors.scoring import flips
from orchestrator.store.campaigns import set_campaign_status
from orchestrator.store.db import Store
from orchestrator.store.detectors import find_detector, register_detector
from orchestrator.store.models import Detector, Event, Label
from orchestrator.store.queries import episode_outcomes
from orchestrator.store.states import CampaignStatus, EventKind, LabelSource
from policies.remote import json_numpy
from tests.detector_kit import build_tiny_judge
from tests.integration.export_support import SIZES, Built, build_campaign

runner = CliRunner()


def cli(*args: str) -> tuple[int, str]:
    res = runner.invoke(app, list(args))
    return res.exit_code, res.output


def register(store: Store, name: str, kind: str, **options: Any) -> int:
    with store.write() as s:
        return register_detector(s, detector_spec(name, kind, options)).detector_id


def others(store: Store) -> list[tuple]:
    """Every label that is not an auto label, as stored."""
    with store.read() as s:
        return [(lab.id, lab.episode_id, lab.source, lab.evaluator, lab.success, lab.progress,
                 lab.failure_mode, lab.notes, lab.version, lab.updated_at)
                for lab in s.scalars(select(Label).where(Label.source != LabelSource.AUTO)
                                     .order_by(Label.id))]


def outcomes(store: Store, cid: int) -> list[tuple]:
    """The report's outcomes (v_episode_outcomes) and the exports' (orchestrator.export)."""
    from orchestrator.export.records import episode_outcome
    from orchestrator.export.store_read import episode_records

    with store.read() as s:
        report = [(o.episode_id, o.outcome, o.outcome_source, o.progress)
                  for o in episode_outcomes(s, [cid])]
        export = [(r.episode_id, r.labels, episode_outcome(r.labels))
                  for r in episode_records(s, cid)]
    return [report, export]


def autos(store: Store, name: str) -> dict[int, Label]:
    with store.read() as s:
        return {lab.episode_id: lab for lab in s.scalars(
            select(Label).where(Label.source == LabelSource.AUTO, Label.evaluator == name))}


def sim_of(store: Store, episode_ids: list[int]) -> dict[int, bool]:
    with store.read() as s:
        return {lab.episode_id: lab.success for lab in s.scalars(
            select(Label).where(Label.source == LabelSource.SIM,
                                Label.episode_id.in_(episode_ids)))}


# -- the CLI, the sim kind ----------------------------------------------------------------------


@pytest.fixture
def cli_store(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """`evalfleet` pointed at a fresh, migrated store on each backend."""
    from orchestrator.config import get_settings

    monkeypatch.setenv("EVALFLEET_DATABASE_URL", db_url)
    get_settings.cache_clear()
    code, out = cli("db", "upgrade")
    assert code == 0, out
    with Store.open(db_url) as store:
        yield store


def test_register_is_immutable_and_detect_writes_auto_labels(cli_store: Store) -> None:
    from orchestrator.config import get_settings

    store = cli_store
    b = build_campaign(store, get_settings().media_dir, episodes=2)  # both have a sim label
    before_labels, before_outcomes = others(store), outcomes(store, b.campaign_id)

    code, out = cli("detector", "register", "sim-90", "--kind", "sim", "-o", "flip_rate=0.5",
                    "-o", "seed=4")
    assert code == 0 and "detector sim-90 v1 (sim) registered as #1" in out, out
    code, out = cli("detector", "register", "sim-90", "--kind", "sim", "-o", "seed=4",
                    "-o", "flip_rate=0.50")
    assert code == 0 and "already registered as #1, unchanged" in out, out
    code, out = cli("detector", "register", "sim-90", "--kind", "sim", "-o", "flip_rate=0.2")
    assert code == 1 and "register it under a new --version" in out, out
    code, out = cli("detector", "register", "x", "--kind", "sim", "-o", "flip_rate_by_policy=1")
    assert code == 2 and "never sees which policy" in out, out
    code, out = cli("detector", "register", "x", "--kind", "llm")
    assert code == 2 and "'llm' is unknown" in out, out
    with store.read() as s:
        rows = list(s.scalars(select(Detector)))
        registered = list(s.scalars(select(Event).where(
            Event.kind == EventKind.DETECTOR_REGISTERED)))
    assert [(d.name, d.version, d.kind) for d in rows] == [("sim-90", "1", "sim")]
    assert rows[0].config["options"] == {"flip_rate": 0.5, "seed": 4}
    assert len(registered) == 1 and registered[0].payload["checksum"] == rows[0].checksum

    code, out = cli("detect", b.campaign, "--detector", "sim-90", "--batch", "1")
    assert code == 0 and "detect done: 2 auto labels by sim-90 v1" in out, out
    got = autos(store, "sim-90")
    sims = sim_of(store, b.episode_ids)
    assert sorted(got) == b.episode_ids
    for ep, lab in got.items():
        assert lab.success == (sims[ep] != flips(4, ep, 0.5))
        assert (lab.detector_id, lab.detector_checksum) == (rows[0].id, rows[0].checksum)
        assert lab.progress is None and lab.notes.startswith("score=")
    assert others(store) == before_labels  # human and sim labels untouched ...
    assert outcomes(store, b.campaign_id) == before_outcomes  # ... and so the report's outcomes
    with store.read() as s:
        saved = list(s.scalars(select(Event).where(Event.kind == EventKind.AUTO_LABELS_SAVED)))
    assert [e.payload["count"] for e in saved] == [1, 1]  # one event per batch written
    assert {e.campaign_id for e in saved} == {b.campaign_id}

    code, out = cli("detector", "list")
    assert code == 0 and "sim-90" in out and rows[0].checksum[:12] in out, out
    code, out = cli("detect", "no-such", "--detector", "sim-90")
    assert code == 2 and "no campaign 'no-such'" in out, out
    code, out = cli("detect", b.campaign, "--detector", "nobody")
    assert code == 2 and "detector 'nobody' is not registered" in out, out


def test_detect_again_writes_nothing_new(cli_store: Store) -> None:
    from orchestrator.config import get_settings

    b = build_campaign(cli_store, get_settings().media_dir, episodes=2)
    assert cli("detector", "register", "s", "--kind", "sim")[0] == 0
    assert "2 auto labels" in cli("detect", b.campaign, "--detector", "s")[1]
    first = {e: (lab.id, lab.success) for e, lab in autos(cli_store, "s").items()}
    with cli_store.write() as s:  # --follow ends once the campaign is done
        set_campaign_status(s, b.campaign_id, CampaignStatus.DONE)
    code, out = cli("detect", str(b.campaign_id), "--detector", "s", "--follow")
    assert code == 0 and "detect done: 0 auto labels" in out, out
    assert {e: (lab.id, lab.success) for e, lab in autos(cli_store, "s").items()} == first


def test_sim_refuses_an_episode_without_a_sim_label_and_keeps_whole_batches(
        store: Store, tmp_path: Path) -> None:
    b = build_campaign(store, tmp_path / "media", episodes=4)  # the third has no sim label
    register(store, "s", "sim")
    with pytest.raises(DetectorError, match=rf"episode {b.episode_ids[2]} has no sim label"):
        label_campaign(store, b.campaign_id, "s", batch=16, media_dir=tmp_path / "media")
    assert autos(store, "s") == {}  # the batch that failed wrote nothing
    with pytest.raises(DetectorError):
        label_campaign(store, b.campaign_id, "s", batch=1, media_dir=tmp_path / "media")
    assert sorted(autos(store, "s")) == b.episode_ids[:2]  # the whole batches before it


def test_another_version_never_changes_a_label(store: Store, tmp_path: Path) -> None:
    b = build_campaign(store, tmp_path / "media", episodes=2)
    register(store, "s", "sim")
    assert label_campaign(store, b.campaign_id, "s", media_dir=tmp_path / "media") == 2
    with store.write() as s:
        register_detector(s, detector_spec("s", "sim", {"flip_rate": 1.0}, version="2"))
    before = {e: (lab.id, lab.success, lab.detector_checksum)
              for e, lab in autos(store, "s").items()}
    assert label_campaign(store, b.campaign_id, "s", version="2",
                          media_dir=tmp_path / "media") == 0
    assert {e: (lab.id, lab.success, lab.detector_checksum)
            for e, lab in autos(store, "s").items()} == before


# -- the vlm kind -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def judge_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_judge(tmp_path_factory.mktemp("judge") / "tiny-judge")


def _last_frame(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]
    return frames[-1]


def test_vlm_judges_the_final_frame(store: Store, tmp_path: Path, judge_dir: Path) -> None:
    media = tmp_path / "media"
    b: Built = build_campaign(store, media, episodes=4)
    before_labels, before_outcomes = others(store), outcomes(store, b.campaign_id)
    register(store, "judge", "vlm", model_path=str(judge_dir), camera="main", threshold=0.9,
             threads=1)
    with store.read() as s:
        row = find_detector(s, "judge")
    assert row.config["weights_sha256"] and row.kind == DetectorKind.VLM
    assert label_campaign(store, b.campaign_id, "judge", batch=3, media_dir=media) == 4
    got = autos(store, "judge")
    assert sorted(got) == b.episode_ids

    # the same score from the last frame decoded independently, one episode at a time
    det = build_detector(row.name, row.kind, row.config, row.checksum)
    with store.read() as s:
        media_of = {e: _media(s, e) for e in got}
    scores = []
    for ep in b.episode_ids:
        frame = _last_frame(media / media_of[ep]["main"])
        assert frame.shape == (*SIZES["main"], 3)
        text = det.prompt(_input(ep, store))  # type: ignore[attr-defined]
        (score,) = det.scores([frame], [text])  # type: ignore[attr-defined]
        scores.append(float(score))
        lab = got[ep]
        assert lab.notes.startswith(f"score={score:.4f}")
        assert lab.success == (score >= 0.9)
        assert lab.detector_checksum == row.checksum
    assert len({round(x, 6) for x in scores}) == len(scores)  # the answer depends on the image
    assert others(store) == before_labels and outcomes(store, b.campaign_id) == before_outcomes


def _media(s: Any, episode_id: int) -> dict[str, str]:
    from orchestrator.store.models import Episode

    ep = s.get(Episode, episode_id)
    return {m["camera"]: m["uri"] for m in ep.media}


def _input(episode_id: int, store: Store) -> Any:
    from orchestrator.detectors.base import DetectorInput
    from orchestrator.store.models import Episode, Task, Trial

    with store.read() as s:
        ep = s.get(Episode, episode_id)
        task = s.get(Task, s.get(Trial, ep.trial_id).task_id)
        return DetectorInput(episode_id, task.instruction, task.key)


def test_vlm_refuses_changed_weights(store: Store, tmp_path: Path) -> None:
    model = build_tiny_judge(tmp_path / "judge", seed=1)
    register(store, "judge", "vlm", model_path=str(model))
    with store.read() as s:
        row = find_detector(s, "judge")
    (model / "extra.txt").write_text("changed")
    with pytest.raises(DetectorError, match="the weights changed since `evalfleet detector "
                       "register`; restore them or register a new --version"):
        build_detector(row.name, row.kind, row.config, row.checksum)


# -- the remote kind ----------------------------------------------------------------------------


class _Judge(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        srv: Any = self.server
        body = json_numpy.loads(self.rfile.read(int(self.headers["Content-Length"])))
        srv.requests.append(body)
        if srv.release is not None:  # hold the reply until the test lets it go
            srv.release.wait(30)
        if srv.status != 200:
            self.send_response(srv.status)
            self.end_headers()
            self.wfile.write(b"judge is down")
            return
        main = body["frames"]["main"]
        score = float(main[-1].mean()) / 255.0
        reply = (json.dumps({"success": score >= 0.5, "score": score}) if srv.reply is None
                 else srv.reply)
        data = reply.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def judge_server() -> Iterator[Any]:
    srv: Any = ThreadingHTTPServer(("127.0.0.1", 0), _Judge)
    srv.requests, srv.status, srv.reply, srv.release = [], 200, None, None
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield srv
    if srv.release is not None:
        srv.release.set()
    srv.shutdown()
    srv.server_close()
    t.join(10)


def test_remote_posts_the_final_frames_and_saves_the_replies(
        store: Store, tmp_path: Path, judge_server: Any) -> None:
    media = tmp_path / "media"
    b = build_campaign(store, media, episodes=3)
    url = f"http://127.0.0.1:{judge_server.server_address[1]}/judge"
    register(store, "lab-judge", "remote", url=url, frames=2, timeout_s=20)
    assert label_campaign(store, b.campaign_id, "lab-judge", batch=2, media_dir=media) == 3
    reqs = judge_server.requests
    assert len(reqs) == 3
    tasks = [_input(e, store).task_key for e in b.episode_ids]
    assert [r["task"] for r in reqs] == tasks
    assert all(r["instruction"] for r in reqs)
    for r, ep in zip(reqs, b.episode_ids, strict=True):
        assert set(r["frames"]) == {"main", "wrist"}
        assert r["frames"]["main"].shape == (2, *SIZES["main"], 3)
        assert r["frames"]["wrist"].shape == (2, *SIZES["wrist"], 3)
        assert r["frames"]["main"].dtype == np.uint8
        with store.read() as s:
            last = _last_frame(media / _media(s, ep)["main"])
        np.testing.assert_array_equal(r["frames"]["main"][-1], last)
    got = autos(store, "lab-judge")
    for r, ep in zip(reqs, b.episode_ids, strict=True):
        score = float(r["frames"]["main"][-1].mean()) / 255.0
        assert got[ep].success == (score >= 0.5)
        assert got[ep].notes.startswith(f"score={score:.4f}")


@pytest.mark.parametrize(("status", "reply", "message"), [
    (500, None, r"HTTP 500 Internal Server Error: \"?b?'judge is down'"),
    (200, '{"success": "yes", "score": 1}', "reply field 'success' must be true or false"),
])
def test_remote_errors_are_one_line_and_write_nothing(  # type: ignore[no-untyped-def]
        store: Store, tmp_path: Path, judge_server: Any, status, reply, message) -> None:
    media = tmp_path / "media"
    b = build_campaign(store, media, episodes=2)
    judge_server.status, judge_server.reply = status, reply
    url = f"http://127.0.0.1:{judge_server.server_address[1]}/judge"
    register(store, "j", "remote", url=url)
    with pytest.raises(DetectorError, match=message) as e:
        label_campaign(store, b.campaign_id, "j", media_dir=media)
    assert "\n" not in str(e.value) and f"episode {b.episode_ids[0]}" in str(e.value)
    assert autos(store, "j") == {}


def test_remote_deadline(store: Store, tmp_path: Path, judge_server: Any) -> None:
    media = tmp_path / "media"
    b = build_campaign(store, media, episodes=1)
    judge_server.release = threading.Event()  # the server answers only after the test
    url = f"http://127.0.0.1:{judge_server.server_address[1]}/judge"
    register(store, "slow", "remote", url=url, timeout_s=0.3)
    with pytest.raises(DetectorError, match=r"no reply within timeout_s=0.3 s"):
        label_campaign(store, b.campaign_id, "slow", media_dir=media)
    assert autos(store, "slow") == {}


# -- passes, --follow ---------------------------------------------------------------------------


def _record_one(store: Store, campaign_id: int, *, sim_success: bool | None = True) -> int:
    """One more counted episode, recorded without video (as an arm without cameras would)."""
    from orchestrator.store import queue

    with store.read() as s:
        cand = queue.pending_candidates(s, limit=1, campaign_ids=[campaign_id])[0]
    with store.write() as s:
        (lt,) = queue.lease_trials(s, [cand.trial_id], holder="t", lease_s=600)
        ep = queue.start_episode(s, lt.trial_id, holder="t", robot_id=None)
    with store.write() as s:
        queue.complete_episode(s, ep, holder="t", step_count=0, late_steps=0,
                               terminated_by="max_steps", media=[], sim_success=sim_success)
    return ep


def _row_and_detector(store: Store, name: str) -> tuple[Any, Any]:
    with store.read() as s:
        row = find_detector(s, name)
    return row, build_detector(row.name, row.kind, row.config, row.checksum)


def test_follow_labels_new_episodes_until_the_campaign_is_done(
        store: Store, tmp_path: Path) -> None:
    from orchestrator.detectors.run import label_follow

    b = build_campaign(store, tmp_path / "media", episodes=2)
    register(store, "s", "sim")
    row, det = _row_and_detector(store, "s")
    waits: list[int] = []
    todos: list[int] = []

    def wait() -> None:  # between passes: the campaign records one more, then ends
        waits.append(len(waits))
        if len(waits) == 1:
            waits.append(_record_one(store, b.campaign_id))
        elif len(waits) == 3:
            with store.write() as s:
                set_campaign_status(s, b.campaign_id, CampaignStatus.DONE)

    res = label_follow(store, b.campaign_id, row, det, media_dir=tmp_path / "media", batch=16,
                       follow=True, wait=wait, on_pass=todos.append)
    new = waits[1]
    assert res.written == 3 and sorted(autos(store, "s")) == [*b.episode_ids, new]
    assert todos == [2, 1, 0] and len(waits) == 3  # two waits, the last pass found nothing


def test_stop_ends_between_batches_and_limit_bounds_the_judged(
        store: Store, tmp_path: Path) -> None:
    from orchestrator.detectors.run import label_follow

    b = build_campaign(store, tmp_path / "media", episodes=2)
    for _ in range(3):
        _record_one(store, b.campaign_id)
    register(store, "s", "sim")
    row, det = _row_and_detector(store, "s")
    batches: list[int] = []
    res = label_follow(store, b.campaign_id, row, det, media_dir=tmp_path / "media", batch=2,
                       on_batch=lambda d: batches.append(d.written),
                       stop=lambda: len(batches) >= 1)
    assert res.written == 2 and batches == [2]
    res = label_follow(store, b.campaign_id, row, det, media_dir=tmp_path / "media", batch=2,
                       limit=1)
    assert res.judged == 1 and len(autos(store, "s")) == 3
    assert label_campaign(store, b.campaign_id, "s", media_dir=tmp_path / "media") == 2


def test_a_looking_detector_skips_episodes_without_video(
        store: Store, tmp_path: Path, judge_server: Any) -> None:
    from orchestrator.detectors.run import label_follow

    media = tmp_path / "media"
    b = build_campaign(store, media, episodes=1)
    bare = _record_one(store, b.campaign_id)
    url = f"http://127.0.0.1:{judge_server.server_address[1]}/judge"
    register(store, "j", "remote", url=url)
    row, det = _row_and_detector(store, "j")
    res = label_follow(store, b.campaign_id, row, det, media_dir=media)
    assert res.written == 1 and res.no_media == {bare: "no video recorded"}
    assert sorted(autos(store, "j")) == b.episode_ids and len(judge_server.requests) == 1
    register(store, "top-only", "remote", url=url, camera="top")
    row, det = _row_and_detector(store, "top-only")
    res = label_follow(store, b.campaign_id, row, det, media_dir=media)
    assert res.written == 0 and sorted(res.no_media) == sorted([*b.episode_ids, bare])
    assert "no video of the camera it reads (recorded: " in res.no_media[b.episode_ids[0]]
    assert len(judge_server.requests) == 1  # nothing was sent
