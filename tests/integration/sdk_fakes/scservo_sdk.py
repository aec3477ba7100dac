"""A fake of `scservo_sdk` (feetech-servo-sdk 1.0.0) as SO101Driver uses it.

`new()` returns a module-like namespace (PortHandler, PacketHandler, GroupSyncRead,
GroupSyncWrite, COMM_SUCCESS, COMM_RX_TIMEOUT) bound to one simulated bus, `ns.bus`, of
STS3215 servos (ids 1..6). The register layout and byte order are the real ones: Goal_Position
42 and Present_Position 56 (2 bytes, little-endian; Present_Position sign-magnitude on bit 15),
Torque_Enable 40. A servo with torque on moves its present position towards its goal at
`speed` ticks/s (integrated from time.monotonic() when read); with torque off it stays put.
Failure knobs: `bus.timeouts` (the next N sync reads answer COMM_RX_TIMEOUT), `bus.unplugged`
(every transfer raises OSError, like pyserial on a pulled USB cable), `bus.silent` (ids that
never answer).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from types import SimpleNamespace

COMM_SUCCESS = 0
COMM_RX_TIMEOUT = -6
COMM_NOT_AVAILABLE = -9
ADDR_TORQUE_ENABLE, ADDR_GOAL, ADDR_PRESENT = 40, 42, 56


@dataclass
class Servo:
    present: float = 2048.0
    goal: int = 2048
    torque: bool = False


@dataclass
class Bus:
    servos: dict[int, Servo] = field(default_factory=lambda: {i: Servo() for i in range(1, 7)})
    speed: float = 3000.0  # ticks/s
    t: float = field(default_factory=time.monotonic)
    timeouts: int = 0
    unplugged: bool = False
    silent: set[int] = field(default_factory=set)
    opened: int = 0
    goal_writes: list[dict[int, int]] = field(default_factory=list)
    byte_writes: list[tuple[int, int, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def advance(self) -> None:
        now = time.monotonic()
        dt, self.t = now - self.t, now
        for s in self.servos.values():
            if s.torque:
                d = s.goal - s.present
                s.present += max(-self.speed * dt, min(self.speed * dt, d))

    def check(self) -> None:
        if self.unplugged:
            raise OSError(5, "Input/output error")


def _sign_magnitude(v: int) -> int:
    return (abs(v) & 0x7FFF) | 0x8000 if v < 0 else v & 0x7FFF


def new() -> SimpleNamespace:
    bus = Bus()

    class PortHandler:
        def __init__(self, port_name: str) -> None:
            self.port_name = port_name
            self.is_open = False

        def openPort(self) -> bool:
            if bus.unplugged:
                raise OSError(2, f"could not open port {self.port_name}")
            self.is_open = True
            bus.opened += 1
            return True

        def setBaudRate(self, baudrate: int) -> bool:
            return baudrate == 1_000_000

        def closePort(self) -> None:
            self.is_open = False

    class PacketHandler:
        def getTxRxResult(self, result: int) -> str:
            return {COMM_RX_TIMEOUT: "[TxRxResult] There is no status packet!",
                    COMM_SUCCESS: "[TxRxResult] Communication success!"}.get(result, f"result {result}")

        def getRxPacketError(self, error: int) -> str:
            return f"error {error}"

        def write1ByteTxRx(self, port: PortHandler, scs_id: int, address: int,
                           data: int) -> tuple[int, int]:
            with bus.lock:
                bus.check()
                bus.advance()
                if scs_id in bus.silent or scs_id not in bus.servos:
                    return COMM_RX_TIMEOUT, 0
                bus.byte_writes.append((scs_id, address, data))
                if address == ADDR_TORQUE_ENABLE:
                    bus.servos[scs_id].torque = bool(data)
                return COMM_SUCCESS, 0

    def packet_handler(protocol_end: int) -> PacketHandler:
        assert protocol_end == 0, "STS servos are little-endian: PacketHandler(0)"
        return PacketHandler()

    class GroupSyncRead:
        def __init__(self, port: PortHandler, ph: PacketHandler, start_address: int, data_length: int) -> None:
            assert (start_address, data_length) == (ADDR_PRESENT, 2), "the driver reads Present_Position"
            self.ids: list[int] = []
            self.data: dict[int, int] = {}

        def addParam(self, scs_id: int) -> bool:
            if scs_id in self.ids:
                return False
            self.ids.append(scs_id)
            return True

        def txRxPacket(self) -> int:
            with bus.lock:
                bus.check()
                if bus.timeouts > 0:
                    bus.timeouts -= 1
                    return COMM_RX_TIMEOUT
                bus.advance()
                self.data = {i: _sign_magnitude(round(bus.servos[i].present)) for i in self.ids
                             if i in bus.servos and i not in bus.silent}
                return COMM_SUCCESS

        def isAvailable(self, scs_id: int, address: int, data_length: int) -> bool:
            return scs_id in self.data and (address, data_length) == (ADDR_PRESENT, 2)

        def getData(self, scs_id: int, address: int, data_length: int) -> int:
            return self.data[scs_id] if self.isAvailable(scs_id, address, data_length) else 0

    class GroupSyncWrite:
        def __init__(self, port: PortHandler, ph: PacketHandler, start_address: int, data_length: int) -> None:
            assert (start_address, data_length) == (ADDR_GOAL, 2), "the driver writes Goal_Position"
            self.params: dict[int, list[int]] = {}

        def addParam(self, scs_id: int, data: list[int]) -> bool:
            if scs_id in self.params or len(data) > 2:
                return False
            self.params[scs_id] = list(data)
            return True

        def txPacket(self) -> int:
            with bus.lock:
                bus.check()
                bus.advance()
                goals = {i: d[0] | (d[1] << 8) for i, d in self.params.items()}
                bus.goal_writes.append(goals)
                for i, g in goals.items():
                    if i in bus.servos:
                        bus.servos[i].goal = g
                return COMM_SUCCESS

    return SimpleNamespace(bus=bus, PortHandler=PortHandler, PacketHandler=packet_handler,
                           GroupSyncRead=GroupSyncRead, GroupSyncWrite=GroupSyncWrite,
                           COMM_SUCCESS=COMM_SUCCESS, COMM_RX_TIMEOUT=COMM_RX_TIMEOUT,
                           COMM_NOT_AVAILABLE=COMM_NOT_AVAILABLE)
