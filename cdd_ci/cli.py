"""The `cdd` command: parse, build objects, call one library function, map to an exit code.

Heavy modules are imported inside the commands so that `cdd --help` starts fast.
Exit codes: 0 passed, 1 checks failed, 2 bad config or usage, 3 infrastructure failed,
4 teardown failed (resources may be left), 130/143 interrupted by SIGINT/SIGTERM.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from cdd_ci.models import ExitCode
from cdd_ci.text import Scrubber
from cdd_ci.words import plural

if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.console import Console

    from cdd_ci.config import Config
    from cdd_ci.github.context import GitHubContext
    from cdd_ci.infra.vagrant import GlobalEntry
    from cdd_ci.models import RunResult

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
    # $CDD_CONFIG: a workflow job of a matrix names its environment once, for every step
    Path, typer.Option("--config", "-c", envvar="CDD_CONFIG", help="The cdd.toml to use.",
                       show_default=True)
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


def _load(path: Path, *, vagrant: bool = True) -> Config:
    """Every command's config, through the same validation as `cdd validate`; `savings`
    reads only the history, so a host without the Vagrantfile may run it."""
    from cdd_ci.config import ConfigError, load_config, validate_config
    from cdd_ci.history.store import DriverMissing, open_history

    try:
        config = validate_config(path) if vagrant else load_config(path)
        open_history(config.history_path)
    except ConfigError as exc:
        fail(str(exc))
    except DriverMissing as exc:
        fail(f"[report] history: {exc}")
    return config


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"cdd {version('cdd-ci')}")
        except PackageNotFoundError:
            typer.echo("cdd (version unknown: not installed as a package)")
        raise typer.Exit(0)


@app.callback()
def _options(
    version: Annotated[bool, typer.Option(
        "--version", "-V", callback=_version, is_eager=True,
        help="Print the version and exit.")] = False,
) -> None:
    """Rebuild the whole environment from scratch, prove it works, report, always destroy."""


def _policy(value: str | None) -> object:
    from cdd_ci.config import DestroyPolicy

    if value is None:
        return None
    try:
        return DestroyPolicy(value)
    except ValueError:
        fail(f"--destroy: expected always, passing or never (got {value!r})")


def _finish(result: RunResult) -> NoReturn:
    from cdd_ci.models import OUTCOMES

    code = result.exit_code()
    typer.echo(f"cdd: {result.environment} run {result.run_id}: {OUTCOMES[code].said} "
               f"(exit {int(code)})", err=True)
    raise typer.Exit(int(code))


def _duration(option: str, value: str) -> float:
    from cdd_ci.durations import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        fail(f"{option}: {exc}")


def _console() -> Console:
    from rich.console import Console

    # print with cdd_ci.report.tables.show: fitted to a terminal, full lines in a CI log
    return Console(highlight=False)


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
    from cdd_ci.github.context import context_from_env

    try:
        return context_from_env(os.environ, api_url)
    except ConfigError as exc:
        fail(str(exc))


@app.command(short_help="Build, check, harvest, destroy and report: the daily run.")
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
    from cdd_ci.backend import real_backend
    from cdd_ci.infra.signals import Cancellation, interruptible
    from cdd_ci.lifecycle import Lifecycle
    from cdd_ci.report.progress import ConsoleDisplay
    from cdd_ci.report.reporters import Reporting

    cfg = _load(config)
    policy = _policy(destroy)
    hold = _duration("--hold-on-failure", hold_on_failure) if hold_on_failure else 0.0
    # checked before anything is built: a missing token must not cost a whole build
    github = _github(github_api_url) if issues else None
    reporting = Reporting(lambda line: typer.echo(f"cdd: {line}", err=True))
    reporters = [reporting.issues(github, cfg.history_path, cfg.root)] \
        if github is not None else []
    reporters.append(reporting.summary(_junit_path(cfg)))
    cancellation = Cancellation()
    with interruptible(cancellation):
        lifecycle = Lifecycle(cfg, real_backend(), ConsoleDisplay(), cancellation,
                              policy=policy, reporters=reporters,  # type: ignore[arg-type]
                              hold_on_failure=hold)
        result = lifecycle.run()
    _finish(result)


@app.command(short_help="Open, update or close GitHub issues from a run's JUnit report.")
def issues(
    junit_path: Annotated[Path, typer.Option(
        "--junit", help="The JUnit report of the run to report.")] = Path("reports/junit.xml"),
    github_api_url: ApiUrlOption = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print what would change on GitHub, and change nothing.")] = False,
    baseline: Annotated[Path | None, typer.Option(
        "--baseline", help="JUnit report of an earlier green run, for what changed since.")] = None,
    history: Annotated[str | None, typer.Option(
        "--history", help="The run history (file or URL) the run was recorded in, for the "
        "packages, boxes, tools and commits that changed since the last green run.")] = None,
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

    from cdd_ci.github.issues import IssuePolicy, report_issues
    from cdd_ci.report import junit

    github = _github(github_api_url)
    try:
        result = junit.read(junit_path)
        green = junit.read(baseline) if baseline else None
    except (OSError, ET.ParseError) as exc:
        fail(f"cannot read the JUnit report: {exc}")
    policy = IssuePolicy(comment_interval=timedelta(hours=comment_hours),
                         close_after=close_after, max_issues=max_issues)
    changes = None
    if history is not None and not result.passed:
        from cdd_ci.report.reporters import changes_since_green

        changes = changes_since_green(result, github, history, Path.cwd())
    outcome = report_issues(result, github, policy=policy, dry_run=dry_run, baseline=green,
                            changes=changes)
    for line in outcome.lines():
        typer.echo(line)
    raise typer.Exit(int(ExitCode.OK if outcome.ok else ExitCode.INFRASTRUCTURE))


@app.command(short_help="Build and check the environment, and keep it running.")
def up(config: ConfigOption = Path("cdd.toml"), destroy: DestroyOption = None) -> None:
    """Build and check the environment, and keep it running (the developer's morning)."""
    from cdd_ci.backend import real_backend
    from cdd_ci.infra.signals import Cancellation, interruptible
    from cdd_ci.lifecycle import Lifecycle
    from cdd_ci.report.progress import ConsoleDisplay
    from cdd_ci.report.reporters import Reporting

    cfg = _load(config)
    summary = Reporting(typer.echo).summary(_junit_path(cfg))
    cancellation = Cancellation()
    with interruptible(cancellation):
        lifecycle = Lifecycle(cfg, real_backend(), ConsoleDisplay(), cancellation,
                              policy=_policy(destroy), command="up",  # type: ignore[arg-type]
                              reporters=[summary])
        result = lifecycle.build()
    _finish(result)


@app.command(short_help="Run the smoke checks against the environment that is up.")
def check(config: ConfigOption = Path("cdd.toml")) -> None:
    """Run the smoke checks against the environment that is up now (from `cdd up`)."""
    from cdd_ci.backend import real_backend
    from cdd_ci.recorded import check_recorded
    from cdd_ci.report.progress import ConsoleDisplay

    cfg = _load(config)
    try:
        result = check_recorded(cfg, real_backend(), ConsoleDisplay())
    except LookupError as exc:
        fail(str(exc))
    _finish(result)


@app.command(short_help="Destroy every recorded run of this environment.")
def destroy(
    config: ConfigOption = Path("cdd.toml"),
    run_id: Annotated[str | None, typer.Option(help="Only this run.")] = None,
) -> None:
    """Destroy every recorded run of this environment, from the ledger alone."""
    from cdd_ci.backend import real_backend
    from cdd_ci.recorded import destroy_recorded
    from cdd_ci.report.progress import ConsoleDisplay

    cfg = _load(config)
    steps = destroy_recorded(cfg, real_backend(), ConsoleDisplay(), run_id)
    if not steps:
        typer.echo("cdd: nothing recorded to destroy", err=True)
    if any(not s.ok for s in steps):
        raise typer.Exit(int(ExitCode.TEARDOWN))


@app.command(short_help="Harvest logs, then destroy the environment from `cdd up`.")
def down(
    config: ConfigOption = Path("cdd.toml"),
    run_id: Annotated[str | None, typer.Option(help="This run (default: the latest up).")] = None,
) -> None:
    """Save what [[harvest]] names, then destroy the environment from `cdd up` (the evening)."""
    from cdd_ci.backend import real_backend
    from cdd_ci.recorded import down_recorded
    from cdd_ci.report.progress import ConsoleDisplay

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


@app.command(short_help="Destroy this host's cdd environments whose run is over.")
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

    from cdd_ci.backend import real_backend
    from cdd_ci.host.inventory import on_this_host
    from cdd_ci.host.reaper import reap as reap_runs

    limit = _duration("--older-than", older_than)
    backend = real_backend()
    report = reap_runs(
        on_this_host(vagrant=True, prune=not dry_run),
        environment_for=lambda led: backend.environment(led, None),
        provider=backend.provider, vagrant_destroy=_vagrant_destroy(),
        older_than=limit, dry_run=dry_run, clock=time.time, on_event=typer.echo)
    for problem in report.problems:
        typer.echo(f"cdd: warning: {problem}", err=True)
    typer.echo(report.summary())
    raise typer.Exit(int(report.exit_code()))


def _vagrant_destroy() -> Callable[[GlobalEntry], None]:
    import os

    from cdd_ci.infra.vagrant import destroy_global
    from cdd_ci.text import without_tokens

    env = without_tokens(os.environ)

    def destroy_entry(entry: GlobalEntry) -> None:
        destroy_global(entry.id, env, timeout=300)

    return destroy_entry


@app.command(short_help="List this host's cdd environments and what reap would do.")
def status(
    older_than: OlderThanOption = "6h",
    all_hosts: Annotated[bool, typer.Option(
        "--all-hosts", help="The runs of every host whose machines may still exist, from "
        "the history they share ([report] history of --config, or CDD_HISTORY_URL).")] = False,
    config: ConfigOption = Path("cdd.toml"),
) -> None:
    """List this host's cdd environments: age, run, owner command, live or not, hold,
    machines left, and what `cdd reap` would do with each."""
    import time

    from cdd_ci.host.inventory import on_this_host
    from cdd_ci.host.status import render, render_fleet
    from cdd_ci.report.tables import show

    limit = _duration("--older-than", older_than)
    console = _console()
    if all_hosts:
        from cdd_ci.config import HISTORY_URL_VARIABLE
        from cdd_ci.history.store import DriverMissing, HistoryError, open_history

        location = (_load(config, vagrant=False).history_path if config.exists()
                    else os.environ.get(HISTORY_URL_VARIABLE) or ".cdd/history.sqlite")
        now = time.time()
        try:
            history = open_history(location)
            runs = [r for r in history.usage(now, now + 1) if r.released_at is None]
        except DriverMissing as exc:
            fail(str(exc))
        except HistoryError as exc:
            fail(str(exc), 3)
        show(console, render_fleet(runs, now=now, location=history.location,
                                   terminal=console.is_terminal))
        return
    show(console, render(on_this_host(vagrant=False), now=time.time(), older_than=limit,
                         terminal=console.is_terminal))


@app.command(short_help="Machine-hours used, against always-on and working hours.")
def savings(
    config: ConfigOption = Path("cdd.toml"),
    history: Annotated[str | None, typer.Option(
        help="The history file or postgresql:// URL (default: [report] history of the "
             "config, or CDD_HISTORY_URL).")] = None,
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

    from cdd_ci.config import HISTORY_URL_VARIABLE
    from cdd_ci.config import Savings as SavingsConfig
    from cdd_ci.history.savings import (
        always_on,
        compute,
        render_markdown,
        render_table,
        window_since,
        working_hours,
    )
    from cdd_ci.history.store import DriverMissing, HistoryError, open_history
    from cdd_ci.report.tables import show

    if output not in ("table", "markdown"):
        fail(f"--format: expected table or markdown (got {output!r})")
    cfg = _load(config, vagrant=False) if history is None or config.exists() else None
    settings = cfg.savings if cfg else SavingsConfig()
    path = history or (cfg.history_path if cfg else
                       os.environ.get(HISTORY_URL_VARIABLE) or ".cdd/history.sqlite")
    window = window_since(_duration("--since", since), time.time())
    try:
        runs = open_history(path).usage(window.start, window.end)
    except DriverMissing as exc:
        fail(str(exc))
    except HistoryError as exc:
        fail(str(exc), 3)
    report = compute(runs, window, [always_on(), working_hours(
        settings.working_hours_per_day, settings.working_days)],
        price=settings.price_per_machine_hour if price is None else price,
        currency=settings.currency)
    if output == "markdown":
        typer.echo(render_markdown(report), nl=False)
    else:
        console = _console()
        show(console, render_table(report, terminal=console.is_terminal))
    if plot is not None:
        from cdd_ci.history.plot import PlotError
        from cdd_ci.history.plot import plot as draw

        try:
            typer.echo(f"plot: {draw(report, plot)}", err=True)
        except PlotError as exc:
            fail(str(exc))


@app.command(short_help="Check cdd.toml without starting anything.")
def validate(config: ConfigOption = Path("cdd.toml")) -> None:
    """Check cdd.toml (schema, machine names, paths) without starting anything."""
    cfg = _load(config)
    env = cfg.environment
    typer.echo(
        f"{config}: ok: environment {env.name} "
        f"({plural(len(env.machines), 'machine')}, {plural(len(cfg.checks), 'check')}, "
        f"provider {env.provider}, destroy {cfg.destroy.value}"
        + (f", needs the internet: {env.network_probe}" if env.needs_network else "") + ")"
    )


@app.command(short_help="The project's environments as a workflow matrix (JSON).")
def environments(
    root: Annotated[Path, typer.Option(help="The project's root directory.")] = Path("."),
    glob: Annotated[list[str] | None, typer.Option(
        "--glob", help="Where the cdd files are, relative to the root; repeat for more "
        "(default: cdd.toml, cdd-*.toml, vagrant/*/cdd.toml, vagrant/*/cdd-*.toml).")] = None,
    runner_labels: Annotated[str, typer.Option(
        help="Labels every runner has, comma-separated; the provider's name is added.")
    ] = "self-hosted,linux,vagrant",
    changed_since: Annotated[str | None, typer.Option(
        "--changed-since", metavar="REF",
        help="Only environments whose inputs changed between REF and HEAD (git).")] = None,
    changed: Annotated[list[str] | None, typer.Option(
        "--changed", metavar="PATH",
        help="Only environments whose inputs include this changed path; repeat for more.")
    ] = None,
    shared: Annotated[list[str] | None, typer.Option(
        "--shared", metavar="PATH",
        help="A path every environment depends on (besides vagrant/lib): a change to it "
        "selects them all. Repeat for more.")] = None,
    github_output: Annotated[bool, typer.Option(
        "--github-output",
        help="Also write `matrix` and `count` to the step outputs file $GITHUB_OUTPUT.")
    ] = False,
) -> None:
    """Print {"include": [...]}: per environment its name, config, directory, reports,
    provider and runner labels."""
    import os

    from cdd_ci import environments as envs
    from cdd_ci.config import ConfigError
    from cdd_ci.scaffold import split_list

    if changed_since is not None and changed:
        fail("give --changed-since or --changed, not both")
    output = os.environ.get("GITHUB_OUTPUT", "") if github_output else ""
    if github_output and not output:
        fail("--github-output: GITHUB_OUTPUT is not set (GitHub Actions sets it in a step)")
    try:
        found = envs.discover(root, glob or envs.DEFAULT_GLOBS, split_list(runner_labels))
        paths = envs.changed_since(root, changed_since) if changed_since is not None else changed
        if paths is not None:
            found = envs.affected(found, paths, (*envs.DEFAULT_SHARED, *(shared or ())))
    except ConfigError as exc:
        fail(str(exc))
    typer.echo(envs.matrix(found))
    if output:
        with open(output, "a", encoding="utf-8") as handle:
            handle.write(envs.step_outputs(found))


@app.command(short_help="Write cdd.toml and the CI workflows into a project.")
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
    from cdd_ci.environments import runner_labels as runner_labels_for
    from cdd_ci.scaffold import FORK_SAFETY, InitOptions, default_name, scaffold, split_list

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
    labels = ", ".join(runner_labels_for(options.provider, options.runner_labels))
    typer.echo(f"runners: the workflows build {options.name} on a self-hosted runner labelled "
               f"{labels} (the provider's name is the last label)")
    typer.echo(
        f"next: provision the machines in {options.vagrant_directory}/Vagrantfile, add checks"
        " to cdd.toml, try `cdd run`, then commit"
    )
    for line in FORK_SAFETY:
        typer.echo(line)


def main() -> None:
    try:
        # typer >= 0.2x carries its own copy of click; older ones use click itself
        from typer._click import exceptions as clicks
    except ImportError:  # pragma: no cover
        from click import exceptions as clicks  # type: ignore[no-redef]

    # every line cdd prints, its own or a child's, passes the one scrubber
    scrub = Scrubber.from_env(os.environ)
    sys.stdout, sys.stderr = scrub.stream(sys.stdout), scrub.stream(sys.stderr)
    try:
        code = app(standalone_mode=False)
    except clicks.NoArgsIsHelpError as exc:
        exc.show()  # bare `cdd`: the help is what a newcomer needs
        sys.exit(2)
    except clicks.UsageError as exc:
        # one line, as for any bad input, rather than click's usage block
        where = exc.ctx.command_path if exc.ctx else "cdd"
        typer.echo(f"cdd: error: {exc.format_message().rstrip('.')} (see `{where} --help`)",
                   err=True)
        sys.exit(2)
    except clicks.ClickException as exc:
        typer.echo(f"cdd: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
