"""A lab's own robot side, written from docs/protocol.md alone (no import from `robots`).

lab_wire.py (framing and strict header checks), lab_arm.py (a point end effector on a table
with a camera), lab_bridge.py (the ROUTER server with the page's safety rules); the tests run
evalfleet's orchestrator against it the way a lab would.
"""
