"""The `cdd` command: parse, build objects, call one library function, map to an exit code.

Heavy modules are imported inside the commands so that `cdd --help` starts fast.
Exit codes: 0 passed, 1 checks failed, 2 bad config or usage, 3 infrastructure failed,
4 teardown failed (resources may be left), 130/143 interrupted by SIGINT/SIGTERM.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.console import Console

    from cdd_ci.config import Config
    from cdd_ci.github_context import GitHubContext
    from cdd_ci.models import RunResult
    from cdd_ci.vagrant import GlobalEntry

app = typer.Typer(
    name="cdd",
    help="Rebuild the whole environment from scratch, prove it works, report, always destroy.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # click's plain help: rendering it with rich imports rich, markdown-it and pygments,
    # which tripled the start-up time of `cdd --help`
    rich_markup_mode=None,
)

ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="The cdd.toml to use.", show_default=True)
]
DestroyOption = Annotated[
    str | None,
    typer.Option("--destroy", help="always | passing | never (default: the config's, always)."),
]
ApiUrlOption = Annotated[
    str | None,
    typer.Option("--github-api-url", help="GitHub Enterprise API URL (default: $GITHUB_API_URL, "
                 "else api.github.com)."),
]


def fail(message: str, code: int = 2) -> NoReturn:
    """One line on stderr and a non-zero exit: never a traceback for bad input."""
    typer.echo(f"cdd: error: {message}", err=True)
    raise typer.Exit(code)


def _load(path: Path) -> Config:
    from cdd_ci.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        fail(str(exc))


def _policy(value: str | None) -> object:
    from cdd_ci.config import DestroyPolicy

    if value is None:
        return None
    try:
        return DestroyPolicy(value)
    except ValueError:
        fail(f"--destroy: expected always, passing or never (got {value!r})")


def _finish(result: RunResult) -> NoReturn:
    from cdd_ci.models import ExitCode

    code = result.exit_code()
    verdict = {
        ExitCode.OK: "passed",
        ExitCode.CHECKS_FAILED: "checks failed",
        ExitCode.INFRASTRUCTURE: "infrastructure failed",
        ExitCode.TEARDOWN: "teardown failed: machines may be left, run `cdd destroy`",
    }.get(code, f"interrupted by {result.interrupted_by}")
    typer.echo(f"cdd: {result.environment} run {result.run_id}: {verdict} (exit {int(code)})",
               err=True)
    raise typer.Exit(int(code))


def _duration(option: str, value: str) -> float:
    from cdd_ci.durations import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        fail(f"{option}: {exc}")


def _console() -> Console:
    from rich.console import Console

    console = Console(highlight=False)
    # a CI log or a pipe is no 80-column terminal: do not cut tables down to one
    return console if console.is_terminal else Console(highlight=False, width=200)


def _junit_path(cfg: Config) -> Path:
    """The report's path as people would type it: relative to where cdd was started."""
    path = cfg.report_dir / "junit.xml"
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def _github(api_url: str | None) -> GitHubContext:
    """GITHUB_TOKEN and GITHUB_REPOSITORY as Actions sets them; checked before any work."""
    import os

    from cdd_ci.config import ConfigError
    from cdd_ci.github_context import context_from_env

    try:
        return context_from_env(os.environ, api_url)
    except ConfigError as exc:
        fail(str(exc))


@app.command()
def run(
    config: ConfigOption = Path("cdd.toml"),
    destroy: DestroyOption = None,
    issues: Annotated[bool, typer.Option(
        "--issues", help="After the run, open, update or close GitHub issues for its failures "
        "(needs GITHUB_TOKEN and GITHUB_REPOSITORY).")] = False,
    github_api_url: ApiUrlOption = None,
    hold_on_failure: Annotated[str | None, typer.Option(
        "--hold-on-failure", metavar="DURATION",
        help="Keep a failed environment this long for debugging (e.g. 2h); `cdd reap` "
        "destroys it after that. Default: destroy it like any other.")] = None,
) -> None:
    """Build the environment from scratch, check it, harvest logs, destroy it, report."""
    from cdd_ci.lifecycle import Lifecycle, real_backend
    from cdd_ci.progress import ConsoleDisplay
    from cdd_ci.reporting import Reporting
    from cdd_ci.signals import Cancellation, interruptible

    cfg = _load(config)
    policy = _policy(destroy)
    hold = _duration("--hold-on-failure", hold_on_failure) if hold_on_failure else 0.0
    # checked before anything is built: a missing token must not cost a whole build
    github = _github(github_api_url) if issues else None
    reporting = Reporting(lambda line: typer.echo(f"cdd: {line}", err=True))
    reporters = [reporting.issues(github)] if github is not None else []
    reporters.append(reporting.summary(_junit_path(cfg)))
    cancellation = Cancellation()
    with interruptible(cancellation):
        lifecycle = Lifecycle(cfg, real_backend(), ConsoleDisplay(), cancellation,
                              policy=policy, reporters=reporters,  # type: ignore[arg-type]
                              hold_on_failure=hold)
        result = lifecycle.run()
    _finish(result)


@app.command()
def issues(
    junit_path: Annotated[Path, typer.Option(
        "--junit", help="The JUnit report of the run to report.")] = Path("reports/junit.xml"),
    github_api_url: ApiUrlOption = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print what would change on GitHub, and change nothing.")] = False,
    baseline: Annotated[Path | None, typer.Option(
        "--baseline", help="JUnit report of an earlier green run, for what changed since.")] = None,
    close_after: Annotated[int, typer.Option(
        help="Green runs in a row before an issue is closed.", min=1)] = 2,
    comment_hours: Annotated[float, typer.Option(
        help="At most one comment per failure in this many hours.", min=0)] = 24,
    max_issues: Annotated[int, typer.Option(
        help="Failures of one run that get an issue each; the rest share one.", min=1)] = 10,
) -> None:
    """Open, update, close or reopen GitHub issues for a run already done, from its report."""
    import xml.etree.ElementTree as ET
    from datetime import timedelta

    from cdd_ci import junit
    from cdd_ci.issues import IssuePolicy, report_issues

    github = _github(github_api_url)
    try:
        result = junit.read(junit_path)
        green = junit.read(baseline) if baseline else None
    except (OSError, ET.ParseError) as exc:
        fail(f"cannot read the JUnit report: {exc}")
    policy = IssuePolicy(comment_interval=timedelta(hours=comment_hours),
                         close_after=close_after, max_issues=max_issues)
    outcome = report_issues(result, github, policy=policy, dry_run=dry_run, baseline=green)
    for line in outcome.lines():
        typer.echo(line)
    raise typer.Exit(0 if outcome.ok else 3)


@app.command()
def up(config: ConfigOption = Path("cdd.toml"), destroy: DestroyOption = None) -> None:
    """Build and check the environment, and keep it running (the developer's morning)."""
    from cdd_ci.lifecycle import Lifecycle, real_backend
    from cdd_ci.progress import ConsoleDisplay
    from cdd_ci.reporting import Reporting
    from cdd_ci.signals import Cancellation, interruptible

    cfg = _load(config)
    summary = Reporting(typer.echo).summary(_junit_path(cfg))
    cancellation = Cancellation()
    with interruptible(cancellation):
        lifecycle = Lifecycle(cfg, real_backend(), ConsoleDisplay(), cancellation,
                              policy=_policy(destroy), command="up",  # type: ignore[arg-type]
                              reporters=[summary])
        result = lifecycle.build()
    _finish(result)


@app.command()
def check(config: ConfigOption = Path("cdd.toml")) -> None:
    """Run the smoke checks against the environment that is up now (from `cdd up`)."""
    from cdd_ci.lifecycle import real_backend
    from cdd_ci.progress import ConsoleDisplay
    from cdd_ci.recorded import check_recorded

    cfg = _load(config)
    try:
        result = check_recorded(cfg, real_backend(), ConsoleDisplay())
    except LookupError as exc:
        fail(str(exc))
    _finish(result)


@app.command()
def destroy(
    config: ConfigOption = Path("cdd.toml"),
    run_id: Annotated[str | None, typer.Option(help="Only this run.")] = None,
) -> None:
    """Destroy every recorded run of this environment, from the ledger alone."""
    from cdd_ci.lifecycle import real_backend
    from cdd_ci.progress import ConsoleDisplay
    from cdd_ci.recorded import destroy_recorded

    cfg = _load(config)
    steps = destroy_recorded(cfg, real_backend(), ConsoleDisplay(), run_id)
    if not steps:
        typer.echo("cdd: nothing recorded to destroy", err=True)
    if any(not s.ok for s in steps):
        raise typer.Exit(4)


@app.command()
def down(
    config: ConfigOption = Path("cdd.toml"),
    run_id: Annotated[str | None, typer.Option(help="This run (default: the latest up).")] = None,
) -> None:
    """Save what [[harvest]] names, then destroy the environment from `cdd up` (the evening)."""
    from cdd_ci.lifecycle import real_backend
    from cdd_ci.progress import ConsoleDisplay
    from cdd_ci.recorded import down_recorded

    cfg = _load(config)
    try:
        result = down_recorded(cfg, real_backend(), ConsoleDisplay(), run_id)
    except LookupError as exc:
        fail(str(exc))
    _finish(result)


OlderThanOption = Annotated[str, typer.Option(
    "--older-than", metavar="DURATION",
    help="Age past which an environment kept by `cdd up`, or machines no ledger here "
    "knows of, are reaped.")]


@app.command()
def reap(
    older_than: OlderThanOption = "6h",
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Say what would be destroyed, and destroy nothing.")] = False,
) -> None:
    """Destroy this host's cdd environments whose run is over; never a live one.

    Over means: its cdd process is gone (killed during up, provision, checks, teardown);
    or its hold (--hold-on-failure) has expired; or it was kept (`cdd up`) and is older
    than --older-than; or no ledger on this host knows of it and it is older than that.
    Safe from cron or CI beside running runs. Exit 0, 3 if something could not be
    listed, 4 if something could not be destroyed.
    """
    import time

    from cdd_ci.inventory import on_this_host
    from cdd_ci.lifecycle import real_backend
    from cdd_ci.reaper import reap as reap_runs

    limit = _duration("--older-than", older_than)
    backend = real_backend()
    report = reap_runs(
        on_this_host(vagrant=True, prune=not dry_run),
        environment_for=lambda led: backend.environment(led, None),
        provider=backend.provider, vagrant_destroy=_vagrant_destroy(),
        older_than=limit, dry_run=dry_run, clock=time.time, on_event=typer.echo)
    for problem in report.problems:
        typer.echo(f"cdd: warning: {problem}", err=True)
    machines = sum(len(r.freed) for r in report.reaped if not r.problem)
    verb = "would free" if dry_run else "freed"
    typer.echo(f"cdd reap: {verb} {len(report.reaped) - len(report.failed)} run(s), "
               f"{machines} machine(s); {len(report.kept)} kept; {len(report.failed)} failed"
               + (f"; {report.stale_pointers} stale index entr(ies) dropped"
                  if report.stale_pointers and not dry_run else ""))
    raise typer.Exit(4 if report.failed else 3 if report.problems else 0)


def _vagrant_destroy() -> Callable[[GlobalEntry], None]:
    import os

    from cdd_ci.inventory import SECRETS
    from cdd_ci.vagrant import destroy_global

    env = {k: v for k, v in os.environ.items() if k not in SECRETS}

    def destroy_entry(entry: GlobalEntry) -> None:
        destroy_global(entry.id, env, timeout=300)

    return destroy_entry


@app.command()
def status(older_than: OlderThanOption = "6h") -> None:
    """List this host's cdd environments: age, run, owner command, live or not, hold,
    machines left, and what `cdd reap` would do with each."""
    import time

    from cdd_ci.hoststatus import render
    from cdd_ci.inventory import on_this_host

    limit = _duration("--older-than", older_than)
    _console().print(render(on_this_host(vagrant=False), now=time.time(),
                            older_than=limit))


@app.command()
def savings(
    config: ConfigOption = Path("cdd.toml"),
    history: Annotated[Path | None, typer.Option(
        help="The history file (default: [report] history of the config).")] = None,
    since: Annotated[str, typer.Option(
        metavar="DURATION", help="The last N days, today included (e.g. 7d, 30d).")] = "30d",
    price: Annotated[float | None, typer.Option(
        min=0, help="Price of one machine-hour (default: [savings] price_per_machine_hour)."
    )] = None,
    output: Annotated[str, typer.Option(
        "--format", help="table (terminal) or markdown (a job summary).")] = "table",
    plot: Annotated[Path | None, typer.Option(
        help="Also draw daily hours against the baselines to this .png or .svg.")] = None,
) -> None:
    """Machine-hours used, against always-on and working-hours baselines, from the history."""
    import time

    from cdd_ci.config import Savings as SavingsConfig
    from cdd_ci.history import History, HistoryError
    from cdd_ci.savings import (
        always_on,
        compute,
        render_markdown,
        render_table,
        window_since,
        working_hours,
    )

    if output not in ("table", "markdown"):
        fail(f"--format: expected table or markdown (got {output!r})")
    cfg = _load(config) if history is None or config.exists() else None
    settings = cfg.savings if cfg else SavingsConfig()
    path = history or (cfg.history_path if cfg else Path("reports/history.sqlite"))
    window = window_since(_duration("--since", since), time.time())
    try:
        runs = History(path).usage(window.start, window.end)
    except HistoryError as exc:
        fail(str(exc), 3)
    report = compute(runs, window, [always_on(), working_hours(
        settings.working_hours_per_day, settings.working_days)],
        price=settings.price_per_machine_hour if price is None else price,
        currency=settings.currency)
    if output == "markdown":
        typer.echo(render_markdown(report), nl=False)
    else:
        _console().print(render_table(report))
    if plot is not None:
        from cdd_ci.savings_plot import PlotError
        from cdd_ci.savings_plot import plot as draw

        try:
            typer.echo(f"plot: {draw(report, plot)}", err=True)
        except PlotError as exc:
            fail(str(exc))


@app.command()
def validate(config: ConfigOption = Path("cdd.toml")) -> None:
    """Check cdd.toml (schema, machine names, paths) without starting anything."""
    cfg = _load(config)
    if not (cfg.vagrant_dir / "Vagrantfile").is_file():
        fail(f"{config}: environment.directory: no Vagrantfile in {cfg.vagrant_dir}")
    env = cfg.environment
    typer.echo(
        f"{config}: ok: environment {env.name} "
        f"({len(env.machines)} machines, {len(cfg.checks)} checks, "
        f"provider {env.provider}, destroy {cfg.destroy.value}"
        + (f", needs the internet: {env.network_probe}" if env.needs_network else "") + ")"
    )


@app.command()
def init(
    name: Annotated[
        str | None, typer.Option(help="Environment name (default: the project directory's name).")
    ] = None,
    directory: Annotated[
        str | None, typer.Option(help="Directory of the Vagrantfile (default: vagrant/NAME).")
    ] = None,
    provider: Annotated[str, typer.Option(help="Vagrant provider.")] = "lxc",
    machines: Annotated[str, typer.Option(help="Machine names, comma-separated.")] = "default",
    runner_labels: Annotated[
        str, typer.Option(help="Labels of the self-hosted runner, comma-separated.")
    ] = "self-hosted,linux,vagrant",
    schedule: Annotated[
        str, typer.Option(help="When the daily run starts: cron, in UTC.")
    ] = "0 5 * * 1-5",
    project: Annotated[Path, typer.Option(help="The project to write into.")] = Path("."),
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files.")] = False,
) -> None:
    """Write cdd.toml and the daily and pull-request workflows into a project."""
    from cdd_ci.config import ConfigError
    from cdd_ci.scaffold import InitOptions, default_name, scaffold, split_list

    options = InitOptions(
        name=name or default_name(project),
        directory=directory or "",
        provider=provider,
        machines=split_list(machines),
        runner_labels=split_list(runner_labels),
        schedule=schedule,
    )
    try:
        written = scaffold(project, options, force=force)
    except ConfigError as exc:
        fail(str(exc))
    for path in written:
        typer.echo(f"wrote {path}")
    typer.echo(
        f"next: provision the machines in {options.vagrant_directory}/Vagrantfile, add checks"
        " to cdd.toml, try `cdd run`, then commit"
    )


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
