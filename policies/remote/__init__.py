"""Policies that run elsewhere: openpi's websocket protocol (client and codec), presets that map
evalfleet's inputs to the observation dicts labs' servers expect, and the server behind
`evalfleet policy serve`. Light imports only: nothing here loads at `import policies.remote`."""
