"""The `audioflow` command: run the stack, submit and follow tasks, migrate and deploy."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cli.client import (
    TERMINAL_STATUSES,
    ApiClient,
    CliError,
    resolve_api_key,
    resolve_api_url,
    stack_file,
)
from cli.render import ProgressBar, task_details, tasks_table
from core.settings import SettingsError

#: Exit codes of `submit --wait` and `status`, by how the task ended.
EXIT_FOR_STATUS = {"done": 0, "failed": 1, "cancelled": 3}


def _client(args: argparse.Namespace) -> ApiClient:
    api_url = resolve_api_url(args.api_url)
    return ApiClient(api_url, resolve_api_key(args.api_key, api_url))


def _progress_bar(args: argparse.Namespace) -> ProgressBar:
    """Progress on stdout, or on stderr when stdout carries `--json` output."""
    return ProgressBar(sys.stderr if args.json else sys.stdout)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def cmd_up(args: argparse.Namespace) -> int:
    from cli.stack import StackError, running_stack
    from core.settings import Settings, audioflow_home

    Settings.from_env()  # a bad variable is refused here, before any process starts
    home = audioflow_home()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"starting the audioflow stack in {home} ...", flush=True)
    try:
        with running_stack(
            home, api_port=args.api_port, prefect_port=args.prefect_port, ui=True
        ) as stack:
            stack_file(home).write_text(
                json.dumps(
                    {"api_url": stack.api_url, "prefect_url": stack.prefect_url, "pid": os.getpid()}
                )
            )
            print(f"API          {stack.api_url}   (docs: {stack.api_url}/schema/swagger)")
            print(f"Prefect UI   {stack.prefect_url}   (login: prefect_auth_string in secrets)")
            print(f"logs         {home / 'logs'}")
            print(f"secrets      {home / 'secrets.json'}   (API key for Swagger's Authorize)")
            print("Ctrl-C stops everything.", flush=True)
            while not stop.wait(1.0):
                dead = [p.name for p in stack.processes if not p.alive()]
                if dead:
                    print(
                        f"stopping: {', '.join(dead)} exited (see {home / 'logs'})", file=sys.stderr
                    )
                    return 1
    except StackError as exc:
        raise CliError(str(exc), code=1) from exc
    finally:
        stack_file(home).unlink(missing_ok=True)
    print("stopped.")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Start this machine's Prefect worker(s) after checking what they need; run until
    Ctrl-C / SIGTERM (which stops them) or until one of them exits."""
    from cli.stack import StackError, start_worker
    from cli.worker import check_services, log_dir, maintenance_name, plan_worker

    plan = plan_worker(
        os.environ,
        prefect_api_url=args.prefect_api_url,
        api_url=args.worker_api_url or args.api_url,
        limit=args.limit,
        name=args.name,
        maintenance=args.maintenance,
    )
    check_services(plan)
    logs = log_dir(plan.env)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    processes = []
    try:
        for pool in plan.pools:
            maintenance = pool != plan.pools[0]
            name = maintenance_name(plan.name) if maintenance else plan.name
            process = start_worker(
                plan.env,
                logs,
                name=f"worker-{name}",
                limit=1 if maintenance else plan.limit,
                pool=pool,
                worker_name=name,
            )
            processes.append(process)
            print(
                f"worker {name} on pool {pool} (limit {1 if maintenance else plan.limit}), "
                f"log {process.log_path}"
            )
        print(f"Prefect {plan.prefect_api_url}; flows report to {plan.api_url}")
        print("Ctrl-C stops the worker(s).")
        sys.stdout.flush()
        while not stop.wait(1.0):
            dead = [p for p in processes if not p.alive()]
            if dead:
                for process in dead:
                    print(
                        f"audioflow: {process.name} exited with code {process.popen.returncode}; "
                        f"log {process.log_path}:\n{process.log_tail()}",
                        file=sys.stderr,
                    )
                return 1
    except StackError as exc:
        raise CliError(str(exc), code=1) from exc
    finally:
        for process in reversed(processes):
            process.stop()
    print("stopped.")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from cli.demo import main

    return main()


def cmd_submit(args: argparse.Namespace) -> int:
    client = _client(args)
    path = Path(args.file)
    options = submit_options(args)  # a bad option file stops us before the upload
    uploaded = client.upload(path)
    payload: dict[str, Any] = {
        "episodeId": args.episode_id or _episode_id(path),
        "audioKey": uploaded["key"],
        "encodingFormats": [f for f in args.formats.split(",") if f],
        "transcribe": not args.no_transcribe,
        **options,
    }
    if args.language:
        payload["language"] = args.language
    task = client.create_task(payload)
    if not args.wait:
        if args.json:
            _print_json(task)
        else:
            print(f"task {task['id']} created ({task['status']})")
            print(f"follow it with: audioflow status {task['id']}")
        return 0
    final = client.follow(task["id"], _progress_bar(args).update)
    if args.json:
        _print_json(final)
    else:
        print(task_details(final))
    return EXIT_FOR_STATUS.get(final["status"], 1)


def submit_options(args: argparse.Namespace) -> dict[str, Any]:
    """The payload's loudness, metadata, chapters and waveform fields from `submit`'s
    options; only what an option sets is sent, so the API's defaults apply to the rest
    (the API checks the values and names the field it refuses)."""
    options: dict[str, Any] = {}
    targets = {
        "targetLufs": args.target_lufs,
        "truePeakDbtp": args.true_peak,
        "targetLufsMono": args.target_lufs_mono,
    }
    given = {name: value for name, value in targets.items() if value is not None}
    if args.no_loudness and given:
        raise CliError("--no-loudness cannot be combined with loudness targets")
    if args.no_loudness:
        options["loudness"] = None
    elif given:
        options["loudness"] = given
    if args.metadata:
        metadata = _json_file(args.metadata, "--metadata")
        if not isinstance(metadata, dict):
            raise CliError(f"--metadata {args.metadata}: expected a JSON object")
        options["metadata"] = metadata
    if args.chapters:
        chapters = _json_file(args.chapters, "--chapters")
        # A Podcasting 2.0 chapters file holds the list under "chapters".
        if isinstance(chapters, dict) and "chapters" in chapters:
            chapters = chapters["chapters"]
        if not isinstance(chapters, list):
            raise CliError(
                f"--chapters {args.chapters}: expected a JSON list of chapters "
                '(or an object with a "chapters" list)'
            )
        options["chapters"] = chapters
    elif args.no_chapters:
        options["chapters"] = []
    if args.no_waveform:
        options["waveform"] = False
    return options


def _json_file(name: str, option: str) -> Any:
    try:
        return json.loads(Path(name).read_text(encoding="utf-8"))
    except OSError as exc:
        raise CliError(f"{option} {name}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise CliError(f"{option} {name}: not JSON ({exc})") from exc


def _episode_id(path: Path) -> str:
    import re

    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem).strip(".-") or "episode"
    return cleaned[:128]


def cmd_status(args: argparse.Namespace) -> int:
    client = _client(args)
    task = client.task(args.task_id)  # an unknown task is a clear 404 before any stream
    if args.follow and task["status"] not in TERMINAL_STATUSES:
        task = client.follow(task["id"], _progress_bar(args).update)
    if args.json:
        _print_json(task)
    else:
        print(task_details(task))
    return EXIT_FOR_STATUS.get(task["status"], 0) if task["status"] in TERMINAL_STATUSES else 0


def cmd_tasks(args: argparse.Namespace) -> int:
    page = _client(args).tasks(status=args.status, limit=args.limit)
    if args.json:
        _print_json(page["items"])
    else:
        print(tasks_table(page["items"]))
        print(f"\n{len(page['items'])} of {page['total']} tasks")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    task = _client(args).cancel(args.task_id)
    if args.json:
        _print_json(task)
    else:
        print(f"task {task['id']} is {task['status']}")
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    client = _client(args)
    task = client.retry(args.task_id)
    if args.wait:
        task = client.follow(task["id"], _progress_bar(args).update)
    if args.json:
        _print_json(task)
    else:
        print(f"task {task['id']}: attempt {task['attempts']}, {task['status']}")
    return EXIT_FOR_STATUS.get(task["status"], 0) if args.wait else 0


def cmd_reprocess(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {
        "taskIds": args.task_id or [],
        "episodeIds": args.episode_id or [],
        "addFormats": [f for f in (args.add_formats or "").split(",") if f],
        "dryRun": args.dry_run,
        "reconcile": not args.no_reconcile,
        "retryFailed": not args.no_retry,
    }
    if args.status:
        body["status"] = args.status
    if args.created_after:
        body["createdAfter"] = args.created_after
    if args.created_before:
        body["createdBefore"] = args.created_before
    run = _client(args).reprocess(body)
    if args.json:
        _print_json(run)
    else:
        print(f"reprocessing run {run['flowRunName']} ({run['flowRunId']}) started")
        print("its summary artifact in the Prefect UI lists what it checked, repaired and retried")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from alembic import command
    from alembic.config import Config

    from cli.stack import PROJECT_DIR
    from core.settings import get_settings

    command.upgrade(Config(str(PROJECT_DIR / "alembic.ini")), "head")
    print(f"database at {get_settings().database.url.split('@')[-1]} is at the latest revision")
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from cli.stack import StackError, deploy
    from cli.stack_secrets import read_secrets

    env = dict(os.environ)
    if not env.get("PREFECT_API_URL"):
        path = stack_file()
        if path.exists():
            env["PREFECT_API_URL"] = json.loads(path.read_text())["prefect_url"] + "/api"
            stack_secrets = read_secrets(path.parent)
            if stack_secrets and not env.get("PREFECT_API_AUTH_STRING"):
                env["PREFECT_API_AUTH_STRING"] = stack_secrets.prefect_auth_string
        else:
            raise CliError("PREFECT_API_URL is not set and no `audioflow up` is running")
    try:
        deploy(env)
    except StackError as exc:
        raise CliError(str(exc), code=1) from exc
    print(f"work pool and deployments registered on {env['PREFECT_API_URL']}")
    return 0


def _task_command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help_text: str,
    func: Callable[[argparse.Namespace], int],
    *,
    wait: bool = False,
    follow: bool = False,
) -> None:
    """A command on one task named by its id: `--json` prints the task as the API returns
    it, `--wait` / `--follow` (where asked for) follow it to the end on its event stream."""
    command = sub.add_parser(name, help=help_text)
    command.add_argument("task_id")
    if wait:
        command.add_argument(
            "--wait", action="store_true", help="follow the new attempt to its end"
        )
    if follow:
        command.add_argument(
            "--follow",
            action="store_true",
            help="follow the task's progress until it ends (event stream; polls without it)",
        )
    command.add_argument("--json", action="store_true")
    command.set_defaults(func=func)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="audioflow", description=__doc__)
    parser.add_argument(
        "--api-url",
        help="API base URL (default: AUDIOFLOW_API_URL, a running `audioflow up`, or http://127.0.0.1:8000)",
    )
    parser.add_argument(
        "--api-key",
        help="API key (default: AUDIOFLOW_API_KEY, or the key `audioflow up` generated)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run API, Prefect server and UI, and a worker in the foreground")
    up.add_argument("--api-port", type=int, default=8000)
    up.add_argument("--prefect-port", type=int, default=4200)
    up.set_defaults(func=cmd_up)

    worker = sub.add_parser(
        "worker",
        help="run this machine's Prefect worker against a Prefect server and API "
        "(checks ffmpeg, the model, storage and the servers first)",
    )
    worker.add_argument(
        "--prefect-api-url", help="the Prefect server's API (default: PREFECT_API_URL)"
    )
    worker.add_argument(
        "--api-url",
        dest="worker_api_url",
        help="the audioflow API the flows report to, as this machine reaches it "
        "(default: AUDIOFLOW_API_URL)",
    )
    worker.add_argument(
        "--limit", type=int, help="flow runs this machine runs at once (default: 2)"
    )
    worker.add_argument("--name", help="worker name shown in Prefect (default: the host name)")
    worker.add_argument(
        "--maintenance",
        action="store_true",
        help="also run a worker (limit 1) on the audioflow-maintenance pool: the scheduled "
        "reprocessing runs (needs DATABASE_URL); one machine is enough",
    )
    worker.set_defaults(func=cmd_worker)

    sub.add_parser(
        "demo", help="process the bundled sample episode on embedded defaults"
    ).set_defaults(func=cmd_demo)

    submit = sub.add_parser("submit", help="upload an audio file and create a task")
    submit.add_argument("file")
    submit.add_argument("--formats", default="mp3_128,mp3_320", help="comma-separated format names")
    submit.add_argument("--no-transcribe", action="store_true")
    submit.add_argument("--language", help="spoken language code, e.g. en")
    submit.add_argument("--episode-id", help="default: derived from the file name")
    loudness = submit.add_argument_group(
        "loudness", "default: -16 LUFS stereo, -19 LUFS mono, true peak -1 dBTP"
    )
    loudness.add_argument("--target-lufs", type=float, help="integrated loudness, stereo outputs")
    loudness.add_argument(
        "--target-lufs-mono",
        type=float,
        help="integrated loudness, mono outputs (default: the stereo target - 3)",
    )
    loudness.add_argument("--true-peak", type=float, help="highest true peak, dBTP")
    loudness.add_argument(
        "--no-loudness", action="store_true", help="keep the source's loudness"
    )
    submit.add_argument(
        "--metadata",
        metavar="FILE.json",
        help='episode tags: {"title", "artist", "album", "date", "episodeNumber", '
        '"description", "coverKey"}',
    )
    chapters = submit.add_mutually_exclusive_group()
    chapters.add_argument(
        "--chapters",
        metavar="FILE.json",
        help='[{"startTime", "title", "url"?, "imageKey"?}], or an object with that list '
        'under "chapters" (default: the source\'s own chapters)',
    )
    chapters.add_argument(
        "--no-chapters", action="store_true", help="no chapters, not even the source's"
    )
    submit.add_argument(
        "--no-waveform", action="store_true", help="no waveform file for web players"
    )
    submit.add_argument(
        "--wait",
        action="store_true",
        help="follow the task with a progress bar (event stream; polls without it)",
    )
    submit.add_argument("--json", action="store_true", help="print the task as the API returns it")
    submit.set_defaults(func=cmd_submit)

    _task_command(sub, "status", "show one task", cmd_status, follow=True)

    tasks = sub.add_parser("tasks", help="list tasks, newest first")
    tasks.add_argument("--status", choices=["pending", "processing", "done", "failed", "cancelled"])
    tasks.add_argument("--limit", type=int, default=50)
    tasks.add_argument("--json", action="store_true")
    tasks.set_defaults(func=cmd_tasks)

    _task_command(sub, "cancel", "cancel a pending or processing task", cmd_cancel)
    _task_command(
        sub, "retry", "a new attempt for a failed or cancelled task", cmd_retry, wait=True
    )

    reprocess = sub.add_parser(
        "reprocess", help="start a reprocessing run (reconcile, retry, select)"
    )
    reprocess.add_argument("--task-id", action="append", help="repeatable")
    reprocess.add_argument("--episode-id", action="append", help="repeatable")
    reprocess.add_argument("--status", choices=["done", "failed", "cancelled"])
    reprocess.add_argument("--created-after", help="ISO date-time")
    reprocess.add_argument("--created-before", help="ISO date-time")
    reprocess.add_argument("--add-formats", help="comma-separated formats to add, e.g. opus_64")
    reprocess.add_argument("--dry-run", action="store_true", help="list what would happen")
    reprocess.add_argument("--no-reconcile", action="store_true")
    reprocess.add_argument("--no-retry", action="store_true")
    reprocess.add_argument("--json", action="store_true")
    reprocess.set_defaults(func=cmd_reprocess)

    sub.add_parser("migrate", help="alembic upgrade head on DATABASE_URL").set_defaults(
        func=cmd_migrate
    )
    sub.add_parser(
        "deploy", help="create the work pool and run `prefect deploy --all`"
    ).set_defaults(func=cmd_deploy)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except CliError as exc:
        print(f"audioflow: {exc}", file=sys.stderr)
        return exc.code
    except SettingsError as exc:  # a bad variable in the environment: say which, no traceback
        print(f"audioflow: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
