"""Exports of a campaign's recorded episodes in the formats the field uses.

`evalfleet export CAMPAIGN --format lerobot DIR` writes a LeRobotDataset v3.0;
`--format episodes FILE.csv|FILE.parquet` one row per episode (docs/export.md).

- records.py: the typed values read from the store, and each episode's resolved outcome;
- lerobot_plan.py, stats.py, episodes_table.py: the pure core (frames, timestamps, indexes,
  metadata and statistics from typed values; no SQL, no video);
- store_read.py: the store queries that fill the records;
- video.py, writer.py: the shell (PyAV concatenation, pyarrow files, the atomic folder).
"""
