"""The `wsss` group and what its commands share: errors in one line, the common options, calling
a flow and printing what it did (see cli/__init__.py for the commands).

Errors a user can cause end in one line on stderr, `error: <file or thing>: <problem>`, and
exit 2 (WsssGroup); images that failed make a finished command exit 1 (finish). `wsss --debug`
shows the tracebacks instead.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import gc
import inspect
import logging
import time
import typing
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import click
import typer
from typer.core import TyperGroup

from wsss_core.errors import WsssError
from wsss_core.registries import ENGINES
from wsss_core.requests import RUN_LEVEL, PathRequest

# Errors a user can cause (a wrong request, an unusable dataset, workspace or output folder, a
# file system that refuses): reported in one line, exit 2. Anything else is a bug: traceback.
REPORTED_ERRORS = (WsssError, OSError)
DEBUG_KEY = "wsss.debug"


def debugging() -> bool:
    """True under `wsss --debug ...`."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx and ctx.meta.get(DEBUG_KEY))


def describe_os_error(error: OSError) -> str:
    """'<file>: permission denied' rather than '[Errno 13] Permission denied: <file>'."""
    problem = (error.strerror or str(error) or type(error).__name__).lower()
    if error.filename is None:
        return problem
    where = str(error.filename) + (f" -> {error.filename2}" if error.filename2 is not None else "")
    return f"{where}: {problem}"


def error_line(error: BaseException) -> str:
    return describe_os_error(error) if isinstance(error, OSError) and not isinstance(error, WsssError) else str(error)


class WsssGroup(TyperGroup):
    """The `wsss` group: a reported error of any command becomes `error: <file or thing>: <problem>`
    on stderr and exit 2, unless --debug asks for the traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except REPORTED_ERRORS as error:
            if ctx.meta.get(DEBUG_KEY):
                raise
            typer.echo(f"error: {error_line(error)}", err=True)
            raise typer.Exit(2) from None


app = typer.Typer(
    name="wsss",
    help="Weakly-supervised semantic segmentation at dataset scale: weak labels in, dense pseudo masks out.",
    cls=WsssGroup,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def main(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an error (and Prefect's) instead of one line.")] = False,
) -> None:
    """Options of every command (given before it: wsss --debug ingest ...)."""
    ctx.meta[DEBUG_KEY] = debug
    # Start-up time: the interpreter's last garbage collections walk every object the command's
    # imports made, Prefect's above all (~0.5 s of a flow command on the 2-core machine). The
    # process is ending, so they are skipped; atexit handlers (logs, events, files) still run.
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)


def checked(names: tuple[str, ...]) -> Callable[..., Any]:
    """A typer callback that refuses a value outside names with the list of valid ones (exit 2)."""

    def check(param: typer.CallbackParam, value: Any) -> Any:
        values = value if isinstance(value, list) else [value]
        for item in values:
            if item is not None and str(item) not in names:
                raise typer.BadParameter(f"{item!r}: choose {', '.join(names)}", param=param)
        return value

    return check


def workspace_dir(value: Path) -> Path:
    """A typer callback: a file:// URL becomes its path, an object-store URL is refused before
    a flow command starts Prefect (Workspace refuses it too, for flows run by a deployment)."""
    from wsss_core.store import workspace_path

    return workspace_path(value)


WorkspaceOpt = Annotated[
    Path, typer.Option("--workspace", "-w", callback=workspace_dir, help="Workspace directory (holds store.zarr).")
]


def field_option(kind: type, name: str) -> Any:
    """The typer option of a request field, from its option(...) metadata (wsss_core.requests)."""
    meta = next(f for f in dataclasses.fields(kind) if f.name == name).metadata
    choices = meta["choices"]
    return typer.Option(
        *((meta["flag"],) if meta["flag"] else ()), help=meta["help"].format(steps=getattr(kind, "STEPS", "")),
        callback=checked(choices) if choices else None, min=meta["min"],
    )


def cli_type(hint: Any) -> Any:
    """The command-line type of a request field's type: X | None -> Optional[X]; a tuple -> a repeatable option."""
    options = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    inner = Optional[list[str]] if typing.get_origin(options[0]) is tuple else options[0]
    return Optional[inner] if type(None) in typing.get_args(hint) else inner


def request_parameters(kind: type) -> list[inspect.Parameter]:
    """A keyword-only parameter for every field of the request type that has an option: the
    path's own first, then those every path shares (splits, until, device, evaluate, mlflow)."""
    hints = typing.get_type_hints(kind)
    fields = sorted((f for f in dataclasses.fields(kind) if "help" in f.metadata), key=lambda f: f.name in RUN_LEVEL)
    return [
        inspect.Parameter(
            f.name, inspect.Parameter.KEYWORD_ONLY, default=inspect.Parameter.empty if f.metadata["required"] else f.default,
            annotation=Annotated[cli_type(hints[f.name]), field_option(kind, f.name)],
        )
        for f in fields
    ]


def with_request(kind: type) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Add an option for every field of a request type (wsss_core.requests) to a command; it
    receives them as one `request` of that type (the options it declares itself, such as
    --set, it applies to that request)."""

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        return with_options(command, "request", request_parameters(kind), kind)

    return decorate


def with_options(command: Callable[..., None], name: str, extra: list[inspect.Parameter], build: Callable[..., Any]) -> Callable[..., None]:
    """A command that takes the `extra` options too, and receives them as one argument `name` = build(**their values)."""
    signature = inspect.signature(command, eval_str=True)
    parameters = [p for p in signature.parameters.values() if p.name != name] + extra

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> None:
        return command(**{name: build(**{p.name: kwargs.pop(p.name) for p in extra})}, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {
        **{k: v for k, v in command.__annotations__.items() if k != name},
        **{p.name: p.annotation for p in extra},
    }
    return wrapper


SplitOpt = Annotated[Optional[list[str]], field_option(PathRequest, "splits")]
DeviceOpt = Annotated[Optional[str], field_option(PathRequest, "device")]
EvaluateOpt = Annotated[bool, field_option(PathRequest, "evaluate")]
MlflowOpt = Annotated[bool, field_option(PathRequest, "log_to_mlflow")]
SetOpt = Annotated[
    Optional[list[str]],
    typer.Option("--set", help="Change any config value by name, e.g. --set gcn.epochs=50 (YAML value; repeatable)."),
]

# The execution options every command that processes images takes (see with_execution).
EXECUTION_OPTIONS = {
    "engine": (Optional[str], typer.Option(callback=checked(ENGINES.names()), help=f"Where batches run: {ENGINES.help()} (default: dask at $DASK_SCHEDULER_ADDRESS when set, else threads).")),
    "workers": (Optional[int], typer.Option(help="Parallel workers (default: CPU cores).", min=1)),
    "dask_address": (Optional[str], typer.Option(help="Address of a running Dask scheduler (default: $DASK_SCHEDULER_ADDRESS).")),
    "batch_size": (int, typer.Option(help="Images per task.", min=1)),
    "progress": (bool, typer.Option("--progress/--no-progress", help="Show progress bars.")),
}
EXECUTION_DEFAULTS = {"engine": None, "workers": None, "dask_address": None, "batch_size": 16, "progress": True}


def with_execution(command: Callable[..., None]) -> Callable[..., None]:
    """Add the execution options (engine, workers, dask address, batch size, progress) to a
    command; it receives them as one `execution` dict (the flows' Execution)."""
    extra = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=EXECUTION_DEFAULTS[name], annotation=Annotated[kind, option])
        for name, (kind, option) in EXECUTION_OPTIONS.items()
    ]
    return with_options(command, "execution", extra, dict)


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def parse_settings(assignments: list[str] | None) -> dict[str, Any]:
    """--set a.b=1 --set c=[1,2] -> {"a.b": 1, "c": [1, 2]} (values read as YAML)."""
    import yaml

    settings: dict[str, Any] = {}
    for assignment in assignments or []:
        name, sep, value = assignment.partition("=")
        if not sep or not name.strip():
            fail(f"--set {assignment!r}: expected NAME=VALUE, e.g. gcn.epochs=50")
        try:
            settings[name.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            settings[name.strip()] = value
    return settings


class ReportedErrorFilter(logging.Filter):
    """Drops a log record whose exception the CLI reports itself in one line.

    Prefect's flow engine logs a failing flow's exception with its traceback ("Encountered
    exception during execution") before re-raising it to call_flow; its task engine does the
    same for a task's. The filter sits on the console handlers only: the run's log in the
    Prefect API (the UI) keeps the traceback.
    """

    enabled = True

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (self.enabled and isinstance(error, REPORTED_ERRORS))


CONSOLE_FILTER = ReportedErrorFilter()


def quiet_prefect_console(enabled: bool) -> None:
    """Put CONSOLE_FILTER on Prefect's console handlers (once), on or off."""
    from prefect.logging.handlers import PrefectConsoleHandler

    CONSOLE_FILTER.enabled = enabled
    loggers = [logging.getLogger()] + [
        logger for name, logger in logging.Logger.manager.loggerDict.items()
        if name.startswith("prefect") and isinstance(logger, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, PrefectConsoleHandler) and CONSOLE_FILTER not in handler.filters:
                handler.addFilter(CONSOLE_FILTER)


def call_flow(target: str, **parameters: Any) -> Any:
    """Import the flow `module:name` and run it; its reported errors reach WsssGroup without
    Prefect printing their traceback first. A flow whose images failed ends Failed but still
    returns what it did (finish() exits 1)."""
    from flows.local_server import start_shared_server

    server = start_shared_server()  # it starts while the flow's modules load
    from flows.common import flow_result
    from wsss_core.registries import resolve_target

    flow = resolve_target(target)
    if server is not None:
        server.use()
    quiet_prefect_console(not debugging())
    with server.flow_settings() if server is not None else contextlib.nullcontext():
        return flow_result(flow, **parameters)


def finish(summaries: list, started: float) -> None:
    """Print what each stage did; exit 1 when any image failed."""
    for summary in summaries:
        typer.echo(summary.line(), err=True)
        for image_id, message in list(summary.failed.items())[:10]:
            typer.echo(f"  failed {image_id}: {message}", err=True)
        if len(summary.failed) > 10:
            typer.echo(f"  ... and {len(summary.failed) - 10} more (see `wsss status`)", err=True)
    typer.echo(f"finished in {time.perf_counter() - started:.1f} s", err=True)
    if any(not s.ok for s in summaries):
        typer.echo("images failed: `wsss status` lists them; fix them, then `wsss retry-failed` re-runs just them", err=True)
        raise typer.Exit(1)


def splits_of(split: list[str] | None) -> list[str] | None:
    return list(split) if split else None
