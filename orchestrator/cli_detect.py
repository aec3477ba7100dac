"""`evalfleet detector register|list` and `evalfleet detect`: success detectors label recorded
episodes (label source auto), off the control loop.

    evalfleet detector register sim-90 --kind sim -o flip_rate=0.1 -o seed=7
    evalfleet detector register judge --kind vlm -o model_path=/models/judge -o threshold=0.6
    evalfleet detector register lab-judge --kind remote -o url=http://judge:8080/judge
    evalfleet detector list
    evalfleet detect my-campaign --detector sim-90 [--batch 16] [--follow] [--limit N]
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from orchestrator.cli_common import fail, open_store

detector_app = typer.Typer(
    help="Register and list success detectors (docs/detectors.md). A registered name + "
    "version never changes: other options or weights need a new --version.",
    no_args_is_help=True,
)
console = Console()

USAGE_ERROR = 2  # bad input: nothing was written


@detector_app.command("register")
def detector_register(
    name: Annotated[str, typer.Argument(help="Detector name (the evaluator of its labels).")],
    kind: Annotated[str, typer.Option(help="sim | vlm | remote.", show_default=False)],
    version: Annotated[str, typer.Option(help="Version label; other options or weights "
                                         "need a new one.")] = "1",
    option: Annotated[
        list[str] | None,
        typer.Option("--option", "-o", help="key=value option of the kind, repeatable (see "
                     "docs/detectors.md, e.g. -o flip_rate=0.1 -o seed=7)."),
    ] = None,
    by: Annotated[str, typer.Option(help="Who registers (written to the audit log).")] = "cli",
) -> None:
    """Register a detector version. The same spec again is a no-op; another spec under an
    existing name + version is refused."""
    from orchestrator.detectors.base import DetectorError
    from orchestrator.detectors.build import detector_spec
    from orchestrator.store.detectors import DetectorChangeRefused, register_detector
    from policies.registration import parse_options
    from policies.registry import PolicyConfigError

    if not name or any(c.isspace() for c in name) or "@" in name or len(name) > 100:
        fail(f"detector register: name {name!r}: use a non-empty name (at most 100 characters) "
             "without spaces or '@'", USAGE_ERROR)
    if not version.strip() or len(version) > 50:
        fail(f"detector register: --version {version!r}: 1..50 characters", USAGE_ERROR)
    try:
        spec = detector_spec(name, kind, dict(parse_options(option or [])), version)
    except (DetectorError, PolicyConfigError) as e:
        fail(f"detector register: {e}", USAGE_ERROR)
    store = open_store()
    with store:
        try:
            with store.write() as s:
                done = register_detector(s, spec, actor=by)
        except DetectorChangeRefused as e:
            fail(f"detector register: {e}")
    label = f"detector {name} v{version} ({spec.kind})"
    if done.created:
        console.print(f"{label} registered as #{done.detector_id}, checksum {spec.checksum[:12]}",
                      highlight=False)
    else:
        console.print(f"{label} already registered as #{done.detector_id}, unchanged",
                      highlight=False)


@detector_app.command("list")
def detector_list(
    name: Annotated[str | None, typer.Argument(help="Only this detector's versions.")] = None,
) -> None:
    """Every registered detector version: kind, options, checksum and labels written."""
    import json

    from rich.table import Table

    from orchestrator.store.detectors import list_detectors

    store = open_store()
    with store, store.read() as s:
        rows = list_detectors(s, name)
    if not rows:
        console.print("no detector is registered" + (f" under {name!r}" if name else "")
                      + ": `evalfleet detector register NAME --kind sim|vlm|remote`")
        return
    table = Table()
    for col in ("name", "version", "kind", "options", "checksum", "labels"):
        table.add_column(col, justify="right" if col == "labels" else "left")
    for r in rows:
        opts = json.dumps(r.config.get("options") or {}, sort_keys=True)
        table.add_row(r.name, r.version, r.kind, opts, r.checksum[:12], str(r.labels))
    console.print(table)


def detect_command(
    campaign: Annotated[str, typer.Argument(help="Campaign name or id.")],
    detector: Annotated[str, typer.Option(help="Registered detector name.",
                                          show_default=False)],
    version: Annotated[str | None, typer.Option(help="Detector version (default: the "
                                                "newest registered).")] = None,
    batch: Annotated[int, typer.Option(min=1, max=4096, help="Episodes judged and written "
                                       "together (one transaction).")] = 16,
    follow: Annotated[bool, typer.Option("--follow", help="Keep labelling new episodes as "
                                         "they are recorded, until the campaign is done "
                                         "(Ctrl-C stops).")] = False,
    limit: Annotated[int | None, typer.Option(min=1, help="Judge at most this many "
                                              "episodes.")] = None,
    poll_s: Annotated[float, typer.Option(min=0.1, max=600.0, help="--follow: seconds "
                                          "between looks for new episodes.")] = 5.0,
) -> None:
    """Label a campaign's recorded episodes with a detector (label source auto; never a
    human or sim label). Re-running carries on where it stopped."""
    _run_detect(campaign, detector, version=version, batch=batch, follow=follow, limit=limit,
                poll_s=poll_s)


def _run_detect(campaign: str, name: str, *, version: str | None, batch: int, follow: bool,
                limit: int | None, poll_s: float) -> None:
    import signal
    import threading
    from typing import Any

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from orchestrator.config import get_settings
    from orchestrator.detectors.base import DetectorError
    from orchestrator.detectors.build import build_detector
    from orchestrator.detectors.run import BatchDone, PassResult, label_follow
    from orchestrator.store.campaigns import CampaignError, get_campaign
    from orchestrator.store.detectors import find_detector

    store = open_store()
    with store:
        try:
            with store.read() as s:
                c = get_campaign(s, campaign)
                cid, cname = c.id, c.name
                row = find_detector(s, name, version)
        except (CampaignError, LookupError) as e:
            fail(f"detect: {e}", USAGE_ERROR)
        try:
            det = build_detector(row.name, row.kind, row.config, row.checksum)
        except DetectorError as e:
            fail(f"detect: {e}")
        stop = threading.Event()

        def on_sigint(*_: Any) -> None:
            if stop.is_set():  # a second Ctrl-C: stop now (the open batch is rolled back)
                raise KeyboardInterrupt
            stop.set()  # the first: stop after the batch being judged is written

        previous = signal.signal(signal.SIGINT, on_sigint)
        res = PassResult()
        try:
            with Progress(TextColumn(f"{row.name} v{row.version} on {cname}"), BarColumn(),
                          MofNCompleteColumn(), TextColumn("{task.description}"),
                          console=console, transient=False) as bar:
                task = bar.add_task("", total=None)
                done = {"judged": 0, "written": 0}

                def on_batch(b: BatchDone) -> None:
                    done["judged"] += b.judged
                    done["written"] += b.written
                    bar.update(task, advance=b.judged, description=f"{done['written']} written")

                res = label_follow(
                    store, cid, row, det, media_dir=get_settings().media_dir, batch=batch,
                    limit=limit, follow=follow, wait=lambda: stop.wait(poll_s), stop=stop.is_set,
                    on_batch=on_batch,
                    on_pass=lambda todo: bar.update(task, total=done["judged"] + todo))
        except DetectorError as e:
            fail(f"detect: {e} (the batches before it were written whole; `detect` again "
                 "carries on)")
        finally:
            signal.signal(signal.SIGINT, previous)
            det.close()
    how = "stopped (Ctrl-C)" if stop.is_set() else "done"
    console.print(f"detect {how}: {res.written} auto labels by {row.name} v{row.version} on "
                  f"{cname} ({res.judged} episodes judged)", highlight=False)
    if res.no_media:
        first = min(res.no_media)
        console.print(f"skipped {len(res.no_media)} episodes without the video the detector "
                      f"reads (e.g. episode {first}: {res.no_media[first]}); not labelled",
                      highlight=False)
