"""Camera frames on the bridge wire: frame descriptors + buffers, and the live-stream (PUB)
message. Part of robots.protocol (import it from there); docs/protocol.md sections 6 and 10.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from robots.protocol_values import (
    MAX_BUFFER_BYTES,
    MAX_STR,
    ErrorCode,
    ProtocolError,
    pack_header,
    unpack_header,
    v_maps,
    v_shape,
    v_str,
    v_uint,
)

# --- frames -------------------------------------------------------------------------------


def _jpeg_encode(img: np.ndarray, quality: int) -> bytes:
    import cv2  # lazy: only when a camera is configured for JPEG

    bgr = np.ascontiguousarray(img[..., ::-1]) if img.ndim == 3 and img.shape[2] == 3 else img
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ProtocolError("JPEG encoding failed", ErrorCode.INTERNAL)
    return buf.tobytes()


def _jpeg_decode(data: Any, shape: tuple[int, ...]) -> np.ndarray:
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ProtocolError("JPEG frame does not decode")
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = arr[..., ::-1]
    if arr.shape != shape:
        raise ProtocolError(f"JPEG frame decodes to {arr.shape}, header says {shape}")
    return arr


def pack_frames(frames: dict[str, np.ndarray], encodings: dict[str, str] | None = None,
                first_part: int = 1, jpeg_quality: int = 90) -> tuple[list[dict], list[Any]]:
    """Frames -> (descriptors for the header, buffers for parts first_part..). Raw frames are
    passed as contiguous arrays (sendable zero-copy)."""
    descs: list[dict] = []
    bufs: list[Any] = []
    for i, (cam, img) in enumerate(frames.items()):
        enc = encodings.get(cam, "raw") if encodings else "raw"
        dtype = _DTYPE_NAMES.get(img.dtype)
        if dtype is None:
            raise ProtocolError(f"camera {cam!r}: dtype {img.dtype} cannot be sent", ErrorCode.INTERNAL)
        if enc == "jpeg":
            buf: Any = _jpeg_encode(img, jpeg_quality)
        else:
            buf = img if img.flags.c_contiguous else np.ascontiguousarray(img)
        descs.append({"camera": cam, "shape": list(img.shape), "dtype": dtype, "encoding": enc,
                      "part": first_part + i})
        bufs.append(buf)
    return descs, bufs


_DTYPES = {"uint8": np.uint8, "uint16": np.uint16, "float32": np.float32}
_DTYPE_NAMES = {np.dtype(t): name for name, t in _DTYPES.items()}
_ITEMSIZE = {name: np.dtype(t).itemsize for name, t in _DTYPES.items()}


def unpack_frames(descs: Any, parts: Sequence[Any]) -> dict[str, np.ndarray]:
    """Descriptors + all message parts -> read-only arrays. Raw frames are zero-copy views
    of the received buffers (`parts` may be zmq.Frame objects: their .buffer is used)."""
    descs = v_maps(descs, "frames")
    out: dict[str, np.ndarray] = {}
    for d in descs:
        cam = v_str(d.get("camera"), "frames.camera")
        shape = tuple(v_shape(d.get("shape"), "frames.shape"))
        dtype = d.get("dtype")
        if dtype not in _DTYPES:
            raise ProtocolError(f"frame dtype {dtype!r} not supported ({sorted(_DTYPES)})")
        part = v_uint(d.get("part"), "frames.part")
        if not 1 <= part < len(parts):
            raise ProtocolError(f"frame {cam!r} points at part {part}, message has {len(parts)}")
        p = parts[part]
        data = getattr(p, "buffer", p)
        if len(data) > MAX_BUFFER_BYTES:
            raise ProtocolError(f"frame {cam!r} is {len(data)} bytes", ErrorCode.TOO_LARGE)
        enc = d.get("encoding")
        if enc == "raw":
            want = math.prod(shape) * _ITEMSIZE[dtype]
            if len(data) != want:
                raise ProtocolError(f"frame {cam!r} has {len(data)} bytes, shape needs {want}")
            arr = np.frombuffer(data, dtype=_DTYPES[dtype]).reshape(shape)
        elif enc == "jpeg":
            arr = _jpeg_decode(data, shape)
        else:
            raise ProtocolError(f"frame encoding {enc!r} not supported (raw, jpeg)")
        arr.flags.writeable = False
        out[cam] = arr
    return out


# --- live stream (PUB) --------------------------------------------------------------------
# One single-part message per camera frame (CONFLATE needs single-part messages):
#   topic: camera name UTF-8 + 0x00 | u32 big-endian header length | msgpack header | frame

_U32 = struct.Struct(">I")


def stream_topic(camera: str) -> bytes:
    return camera.encode("utf-8") + b"\0"


def pack_stream(camera: str, header: dict, buf: Any) -> bytes:
    h = pack_header(header)
    return b"".join((stream_topic(camera), _U32.pack(len(h)), h, memoryview(buf).cast("B")))


def unpack_stream(data: Any) -> tuple[str, dict, np.ndarray]:
    """-> (camera, header, read-only frame). Raw frames are views of `data` (zero-copy)."""
    mv = memoryview(data).cast("B")
    nul = bytes(mv[: MAX_STR + 1]).find(b"\0")
    if nul < 0 or len(mv) < nul + 1 + _U32.size:
        raise ProtocolError("stream message has no camera topic / length prefix")
    try:
        camera = bytes(mv[:nul]).decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProtocolError("stream topic is not UTF-8") from e
    (hlen,) = _U32.unpack(mv[nul + 1 : nul + 1 + _U32.size])
    start = nul + 1 + _U32.size
    if start + hlen > len(mv):
        raise ProtocolError(f"stream header length {hlen} exceeds the message")
    header = unpack_header(mv[start : start + hlen])
    desc = dict(header.get("frame") or {}, part=1)
    frames = unpack_frames([desc], [None, mv[start + hlen :]])
    return camera, header, frames[v_str(desc.get("camera"), "camera")]
