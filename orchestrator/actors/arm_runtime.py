"""ArmRuntime: one arm's side of the orchestrator, inside a RobotHost process (orchestrator/
actors/robot.py). Holds the arm's BridgeClient and its data-plane connection; runs episodes.

Called from the host's threads: `estop` / `stop_episode` answer while an episode runs (they
take no lock the episode holds). Never touches the store: results go back to the
orchestrator, which writes them.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import ray

from orchestrator.arm_info import ArmInfo, PrepareResult
from orchestrator.episode import EpisodeResult, EpisodeSpec, EpisodeStop, PolicyReply, run_episode
from orchestrator.faults import AbortCause
from orchestrator.store.states import EpisodeStatus
from policies.base import PolicyInput
from robots.types import SceneSpec


class ArmRuntime:
    def __init__(self, arm: dict[str, Any], media_dir: str) -> None:
        self.arm = arm
        self.name = arm["name"]
        self.media_dir = Path(media_dir)
        self._client = None
        self._lock = threading.Lock()
        self._stop = EpisodeStop()
        self._policy = None  # dataplane.PolicyClient, kept across episodes

    # -- connection ------------------------------------------------------------------------
    def _new_client(self, timeout_ms: int, purpose: str):  # type: ignore[no-untyped-def]
        from robots.client import BridgeClient, CurveClientKeys

        curve = self.arm.get("curve")
        keys = (
            CurveClientKeys(Path(curve["client_secret"]), Path(curve["server_public"]))
            if curve
            else None
        )
        return BridgeClient(
            self.arm["endpoint"], timeout_ms=timeout_ms, curve=keys, name=f"evalfleet-{purpose}"
        )

    def _connect(self):  # type: ignore[no-untyped-def]
        if self._client is None:
            self._client = self._new_client(int(self.arm.get("timeout_ms", 2000)), self.name)
        return self._client

    def _drop_client(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            finally:
                self._client = None

    def hello(self) -> ArmInfo:
        """Connect (or reconnect) and return the arm's capabilities; raises on failure."""
        with self._lock:
            try:
                client = self._connect()
                info = client.hello()
            except Exception:
                self._drop_client()
                raise
            summary = client.last_summary  # the bridge's safety state with this reply
        caps = info.capabilities
        return ArmInfo(
            estopped=bool(summary is not None and summary.estopped),
            session_id=info.session_id,
            driver=caps.driver,
            spaces=caps.spaces(),
            tags=tuple(caps.tags),
            needs_operator_reset=caps.needs_operator_reset,
            privileged_state=caps.privileged_state,
            version=info.version,
            pub_endpoint=info.stream_endpoint,
            node_id=ray.get_runtime_context().get_node_id(),
        )

    # -- episodes --------------------------------------------------------------------------
    def prepare(self, scene: SceneSpec, episode_key: str) -> PrepareResult:
        """Reset the scene. Real arms answer ready=False with instructions for an operator.
        A refusal of the arm raises robots.client.BridgeCommandError, which crosses Ray with
        its code and message (the runner stores both in the abort reason)."""
        with self._lock:
            client = self._connect()
            try:
                res = client.reset(scene, episode_key)
            except Exception:
                self._drop_client()
                raise
        return PrepareResult(ready=bool(res.ready), instructions=res.instructions or "")

    def _policy_client(self, worker: Any, plane: dict[str, str], timeout_s: float):  # type: ignore[no-untyped-def]
        """The data-plane connection to a worker, kept across episodes while it is the same
        worker instance at the same endpoint."""
        from orchestrator.actors.dataplane import PolicyClient

        c = self._policy
        if c is not None and (c.endpoint, c.instance) == (plane["endpoint"], plane["instance"]):
            c.timeout_s = timeout_s
        else:
            if c is not None:
                c.close()
            c = self._policy = PolicyClient(plane["endpoint"], plane["instance"],
                                            timeout_s=timeout_s)
        c.alive = lambda: ray.get(worker.ping.remote(), timeout=5)
        return c

    def run_episode(self, es: EpisodeSpec, worker: Any) -> EpisodeResult:
        """Run one episode against a PolicyWorker handle."""
        self._stop.clear()
        policy_timeout = max(5.0, 20.0 / es.control_hz)
        try:
            plane = ray.get(worker.reset.remote(self.name, es.instruction), timeout=policy_timeout)
            policy = self._policy_client(worker, plane, policy_timeout)
        except Exception as e:  # noqa: BLE001 - reported as an aborted episode
            from ray.exceptions import RayTaskError

            # the policy's own reset raised: its fault; the worker dead or silent: not
            fault = AbortCause.POLICY if isinstance(e, RayTaskError) else AbortCause.WORKER
            return EpisodeResult(
                status=EpisodeStatus.ABORTED,
                reason=f"policy worker unavailable for arm {self.name}: "
                f"{e.__class__.__name__}: {e}"[:500],
                fault=fault.value,
            )

        def call_policy(inp: PolicyInput) -> PolicyReply:
            t0 = time.perf_counter()
            reply = policy.act(inp)
            out = reply.output
            tokens = None
            if out.tokens is not None:
                tokens = " ".join(str(t) for t in out.tokens)
            return PolicyReply(
                action=out.action,
                tokens=tokens,
                plan=out.plan,
                inference_s=reply.inference_s,
                call_s=time.perf_counter() - t0,
                hold_reason=out.hold_reason,
                chunk=out.chunk,
            )

        try:
            with self._lock:
                client = self._connect()
                result = run_episode(
                    client, call_policy, es, arm=self.name, media_dir=self.media_dir,
                    stop=self._stop,
                )
                if result.status == EpisodeStatus.ABORTED:
                    self._drop_client()  # a fresh socket next time, never a wedged one
        finally:
            policy.end(self.name)
        return replace(result, worker_instance=plane["instance"])  # which worker answered

    def media_problem(self, folder: str) -> str | None:
        """Whether this node can write media under `folder` (relative to the media dir)
        again: None, or the one-line error naming the path."""
        from orchestrator.recording import media_problem

        return media_problem(self.media_dir / folder)

    def stop_episode(self) -> None:
        """The runner stops the episode; it aborts the episode on its side (the result's
        cause is only a fallback)."""
        self._stop.set(AbortCause.SHUTDOWN, "episode stopped by the orchestrator")

    def estop(self, reason: str = "operator") -> bool:
        """E-stop through a separate socket, so it never waits behind a running step."""
        self._stop.set(AbortCause.ESTOP, f"e-stopped ({reason})")
        with self._new_client(500, f"{self.name}-estop") as c:
            c.estop(reason)
        return True

    def close(self) -> None:
        self._drop_client()
        if self._policy is not None:
            self._policy.close()
            self._policy = None
