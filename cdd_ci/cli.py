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
    from cdd_ci.config import Config
    from cdd_ci.github_context import GitHubContext
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
) -> None:
    """Build the environment from scratch, check it, harvest logs, destroy it, report."""
    from cdd_ci.lifecycle import Lifecycle, real_backend
    from cdd_ci.progress import ConsoleDisplay
    from cdd_ci.reporting import Reporting
    from cdd_ci.signals import Cancellation, interruptible

    cfg = _load(config)
    policy = _policy(destroy)
    # checked before anything is built: a missing token must not cost a whole build
    github = _github(github_api_url) if issues else None
    reporting = Reporting(lambda line: typer.echo(f"cdd: {line}", err=True))
    reporters = [reporting.issues(github)] if github is not None else []
    reporters.append(reporting.summary(_junit_path(cfg)))
    cancellation = Cancellation()
    with interruptible(cancellation):
        lifecycle = Lifecycle(cfg, real_backend(), ConsoleDisplay(), cancellation,
                              policy=policy, reporters=reporters)  # type: ignore[arg-type]
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
    from cdd_ci.lifecycle import check_recorded, real_backend
    from cdd_ci.progress import ConsoleDisplay

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
    from cdd_ci.lifecycle import destroy_recorded, real_backend
    from cdd_ci.progress import ConsoleDisplay

    cfg = _load(config)
    steps = destroy_recorded(cfg, real_backend(), ConsoleDisplay(), run_id)
    if not steps:
        typer.echo("cdd: nothing recorded to destroy", err=True)
    if any(not s.ok for s in steps):
        raise typer.Exit(4)


@app.command()
def status(config: ConfigOption = Path("cdd.toml")) -> None:
    """List the recorded runs of this environment and what of them still exists."""
    from cdd_ci.lifecycle import describe_runs

    cfg = _load(config)
    typer.echo(describe_runs(cfg))


@app.command()
def validate(config: ConfigOption = Path("cdd.toml")) -> None:
    """Check cdd.toml (schema, machine names, paths) without starting anything."""
    cfg = _load(config)
    if not (cfg.vagrant_dir / "Vagrantfile").is_file():
        fail(f"{config}: environment.directory: no Vagrantfile in {cfg.vagrant_dir}")
    typer.echo(
        f"{config}: ok: environment {cfg.environment.name} "
        f"({len(cfg.environment.machines)} machines, {len(cfg.checks)} checks, "
        f"provider {cfg.environment.provider}, destroy {cfg.destroy.value})"
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
