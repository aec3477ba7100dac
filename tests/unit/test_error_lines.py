"""What the runner stores and logs for an arm whose hello failed: the client's own one-line
message, unwrapped from Ray's task error and free of ANSI colour codes (pure)."""

from __future__ import annotations

from orchestrator.runner_faults import error_line
from robots.client import BridgeError

BAD_CAPS = ("bridge at tcp://127.0.0.1:5555 sent bad capabilities (protocol v2): bad "
            "capabilities: state: 7 names but 1 units")


class _TaskError(Exception):
    """Shaped like ray.exceptions.RayTaskError: a traceback header as str(), `.cause`."""

    def __init__(self, cause: BaseException | None) -> None:
        super().__init__("\x1b[36mray::RobotActor.hello()\x1b[39m (pid=1, actor_id=ab)\n"
                         "  File \"robots/protocol_payloads.py\", line 151\n"
                         f"{type(cause).__name__ if cause else 'BridgeError'}: {BAD_CAPS}")
        self.cause = cause


def test_a_ray_task_error_gives_its_causes_own_message() -> None:
    line = error_line(_TaskError(BridgeError(BAD_CAPS, "tcp://127.0.0.1:5555")))
    assert line == BAD_CAPS


def test_a_ray_traceback_without_its_cause_gives_its_last_line_without_colours() -> None:
    line = error_line(_TaskError(None))
    assert line == f"BridgeError: {BAD_CAPS}"
    assert "\x1b[" not in line and "ray::" not in line


def test_other_errors_name_their_class_and_keep_one_line() -> None:
    assert error_line(ConnectionRefusedError("no\nmore")) == "ConnectionRefusedError: no"
    assert error_line(TimeoutError()) == "TimeoutError"
    assert len(error_line(ValueError("x" * 500))) == 300
