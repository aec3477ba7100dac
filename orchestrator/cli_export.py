"""`evalfleet export`: a campaign's recorded episodes as training data or as a table.

The heavy parts (pyarrow, PyAV, the store) are imported when the command runs, so the CLI
starts as fast as before.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from orchestrator.cli_common import fail, open_store

console = Console()


class ExportFormat(StrEnum):
    LEROBOT = "lerobot"
    EPISODES = "episodes"


def export_command(
    campaign: Annotated[str, typer.Argument(help="Campaign name (`evalfleet campaign list`).",
                                            metavar="CAMPAIGN")],
    dest: Annotated[Path, typer.Argument(
        help="lerobot: the dataset folder to create (must not exist, or be empty); "
             "episodes: the file to write, FILE.csv or FILE.parquet.", metavar="DEST")],
    fmt: Annotated[ExportFormat, typer.Option(
        "--format", "-f", help="lerobot: a LeRobotDataset v3.0 folder; episodes: one row "
        "per episode (CSV or Parquet by DEST's ending).")] = ExportFormat.LEROBOT,
    blind: Annotated[bool, typer.Option(
        "--blind", help="Leave policy names and versions out: episodes carry only the "
        "policy's blind code (for sharing with evaluators or reviewers).")] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace DEST if it exists (only once the new export is "
        "complete).")] = False,
) -> None:
    """Export a campaign's counted, recorded episodes.

    [bold]--format lerobot DIR[/bold] writes a LeRobotDataset v3.0 that LeRobot's
    `LeRobotDataset(repo_id, root=DIR)` loads: meta/info.json, meta/stats.json,
    meta/tasks.parquet, meta/episodes/chunk-000/file-000.parquet (per episode: frame range,
    video segments, success = the resolved outcome, progress, failure modes, evaluator count,
    blind code, policy name unless --blind, task category, scene seed), data/chunk-000/
    file-000.parquet (one row per control step: observation.state, action, timestamp, ...)
    and videos/observation.images.CAMERA/chunk-000/file-000.mp4 (the recorded H.264 of every
    episode, copied without re-encoding where the files allow).

    [bold]--format episodes FILE.csv|FILE.parquet[/bold] writes one row per episode: task,
    policy, robot, timings, outcome, votes, evaluators, failure modes.

    Nothing half-written is left at DEST: the export goes to DEST.partial-XXXX first and is
    renamed at the end. docs/export.md lists every field.

    Examples:

        evalfleet export demo-1a2b3c ./demo-lerobot
        evalfleet export demo-1a2b3c ./shared --blind
        evalfleet export demo-1a2b3c episodes.parquet --format episodes
    """
    from orchestrator.config import get_settings
    from orchestrator.export.records import ExportError
    from orchestrator.export.writer import export_episodes, export_lerobot

    store = open_store()
    with store:
        try:
            if fmt is ExportFormat.EPISODES:
                res = export_episodes(store, campaign, dest, blind=blind, overwrite=overwrite)
                console.print(f"{res.rows} episodes of {campaign} -> [bold]{res.path}[/bold]")
                return
            with _bar(campaign) as progress:
                out = export_lerobot(store, campaign, dest, media_dir=get_settings().media_dir,
                                     blind=blind, overwrite=overwrite, progress=progress)
        except ExportError as e:
            fail(str(e))
        except OSError as e:
            fail(f"export of {campaign} to {dest} failed: {e}; nothing was left at {dest}")
    videos = ", ".join(f"{c} ({m})" for c, m in zip(out.cameras, out.video_methods, strict=True))
    console.print(f"LeRobotDataset v3.0 at [bold]{out.path}[/bold]: {out.episodes} episodes, "
                  f"{out.frames} frames; videos: {videos or 'none'}")
    if out.skipped:
        console.print(f"left out {len(out.skipped)} episode(s) without a frame: "
                      f"{', '.join(map(str, out.skipped))}")


class _bar:
    """A rich progress bar behind writer.Progress."""

    def __init__(self, campaign: str) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(TextColumn(f"exporting {campaign}"), BarColumn(),
                            MofNCompleteColumn(), TimeRemainingColumn(), console=console,
                            transient=True)
        self.task = self.bar.add_task("export", total=None)

    def __enter__(self) -> Any:
        from orchestrator.export.writer import Progress

        self.bar.__enter__()
        return Progress(lambda n: self.bar.update(self.task, total=n),
                        lambda: self.bar.advance(self.task))

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(None, None, None)
