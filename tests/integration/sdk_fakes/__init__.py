"""Fakes of the real arms' and cameras' SDKs, one module per SDK, injected by the driver tests.

Each fake mimics exactly the SDK calls its driver makes (names, arguments, units, return
values), records the commands, and integrates simple kinematics so the state responds.
"""
