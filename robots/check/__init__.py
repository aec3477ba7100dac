"""`evalfleet bridge check`: a driver conformance check, run by a lab on its own driver.

In the spirit of Gymnasium's env checker: before a RobotDriver is served behind the bridge,
the check drives it the way the bridge will (through the bridge's own safety functions) and
says, one line per check, what conforms and what does not.

- results.py: CheckResult, the verdict, the JSON form (pure).
- spaces_checks.py: declared spaces are consistent (pure, over Capabilities).
- behaviour.py: observe / reset / clip / NaN / stop / timing checks (pure, over recorded values).
- gate.py: the bridge's safety rules for one command (pure) and the recording arm (shell).
- runner.py: the thin shell that drives a connected driver and returns the results.
- loading.py: a driver by name (`sim` | `module:Factory`) and its `--config` YAML.
- report.py: the rich table and the FAIL lines; the command is robots/cli.py `bridge check`.
"""
