"""The walbctr command: a thin shell over the pure core and the Docker edges.

Heavy modules (pydantic models, docker, python-on-whales, rich) are imported inside the
commands that need them, so that `walbctr --help` stays instant.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from walbctr import __version__
from walbctr.errors import WalbctrError

if TYPE_CHECKING:
    from walbctr.display import ProgressMode
    from walbctr.layout.spec import Layout

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_LAYOUT = os.environ.get("WALBCTR_LAYOUT", "layout.yaml")

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def friendly(func: F) -> F:
    """Operator errors become a paragraph and an exit status, never a traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except WalbctrError as err:
            click.echo(f"walbctr: {err}", err=True)
            sys.exit(err.exit_code)
        except KeyboardInterrupt:
            click.echo("walbctr: interrupted", err=True)
            sys.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise  # click's own ways out: usage errors, --help, a declined prompt
        except Exception as err:
            if os.environ.get("WALBCTR_DEBUG"):
                raise
            kind = type(err).__module__.split(".")[0]
            what = "Docker" if kind in ("docker", "python_on_whales", "requests") else \
                "internal error"
            text = " ".join(str(err).split())[:600] or type(err).__name__
            click.echo(f"walbctr: {what}: {text}\n(set WALBCTR_DEBUG=1 for the traceback"
                       + ("; please report this)" if what == "internal error" else ")"),
                       err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


def load(path: str) -> Layout:
    from walbctr.layout.loader import read_layout

    layout = read_layout(path)
    for w in layout.warnings:
        click.echo(f"warning: {w.render(layout.source)}", err=True)
    return layout


layout_argument = click.argument(
    "layout", default=DEFAULT_LAYOUT, required=False, metavar="[LAYOUT]",
    type=click.Path(dir_okay=False),
)


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="walbctr")
def main() -> None:
    """Build, run and operate WalB backup groups in containers.

    One layout file (LAYOUT, default ./layout.yaml or $WALBCTR_LAYOUT) says which walb
    servers run on which hosts. walbctr turns it into server command lines and compose
    files, builds the walb-tools image, and runs the group through Docker.

    \b
    Start here:
      walbctr up examples/lab.yaml                 a lab group on this machine's Docker
      walbctr down examples/lab.yaml --purge-lab   and take it away again
      walbctr validate examples/minimal.yaml       check a layout
      walbctr cmdline examples/minimal.yaml        the exact server command lines
      walbctr render examples/minimal.yaml         compose files, one per host
      walbctr schema > layout.schema.json          editor completion for layouts
    """


@main.command()
@layout_argument
@click.option("-q", "--quiet", is_flag=True, help="Print nothing when the layout is valid.")
@friendly
def validate(layout: str, quiet: bool) -> None:
    """Check LAYOUT and report every problem at once.

    Exit status 0 when valid, 2 when not. Each problem names the file, line and field
    (e.g. archives[0].vg) and how to fix it. Warnings do not fail validation.
    """
    from walbctr.layout.server import Role

    lay = load(layout)
    if quiet:
        return
    counts = ", ".join(
        f"{len(lay.of_role(r))} {r.value if len(lay.of_role(r)) == 1 else r.section}"
        for r in Role
    )
    hosts = len(lay.used_hosts)
    click.echo(f"{lay.source}: ok: group {lay.group!r}, {counts} on {hosts} "
               f"host{'s' if hosts != 1 else ''} ({lay.network_mode} networking)")


@main.command()
@layout_argument
@click.option("--host", "host", help="Only the servers on this host.")
@friendly
def cmdline(layout: str, host: str | None) -> None:
    """Print every server's command line, in start order.

    Archives first, then proxies, then storages: the order upstream requires. These are
    exactly the commands the containers run. A storage's -archive (the primary archive:
    the first in 'archives') and -proxy (proxies in list order, highest priority first)
    are derived from the layout, never typed twice.
    """
    from walbctr.render.cmdline import command_line

    lay = load(layout)
    hosts = lay.select_hosts(host)
    for s in lay.servers:
        if s.host in hosts:
            click.echo(f"@{s.host} {s.id}: {command_line(s, lay)}")


@main.command()
@layout_argument
@click.option("-o", "--output", default="compose", show_default=True,
              type=click.Path(file_okay=False),
              help="Directory to write into; files go to OUTPUT/GROUP/HOST.yaml.")
@click.option("--stdout", is_flag=True, help="Print the files instead of writing them.")
@click.option("--start-interval", is_flag=True,
              help="Add the health check's start_interval (a first check within a second) "
                   "and the 30 s interval; only when every host runs Docker 25 (API 1.44) "
                   "or later, whose Compose alone accepts the key.")
# The default since issue #26; kept so that scripts written for the old default still run.
@click.option("--no-start-interval", is_flag=True, hidden=True)
@friendly
def render(layout: str, output: str, stdout: bool, start_interval: bool,
           no_start_interval: bool) -> None:
    """Write compose files for LAYOUT: one per host that runs servers.

    Each server is a service named by its id, with the walb command line, a walb-protocol
    health check, depends_on in tier order (within the host), least privilege per role,
    and its base dir and log bound at the same paths. Output is deterministic. Files for
    hosts that no longer run servers are removed if walbctr generated them.

    The health check has no start_interval and a 10 s interval by default, because render
    cannot see the engines and Compose before Docker 25 refuses the key; pass
    --start-interval when every host runs Docker 25 (API 1.44) or later. ('walbctr up'
    asks each engine and decides per host by itself.)
    """
    from walbctr.errors import warn
    from walbctr.render.compose import file_name
    from walbctr.render.compose import render as render_files

    if no_start_interval:
        if start_interval:
            raise click.UsageError("--start-interval and --no-start-interval contradict "
                                   "each other; pass one")
        warn("warning: --no-start-interval is deprecated: it is the default now "
             "(pass --start-interval to opt in)")
    lay = load(layout)
    files = render_files(lay, () if start_interval else lay.used_hosts)
    if stdout:
        for text in files.values():
            click.echo(text, nl=False)
        return
    from walbctr.docker.compose_files import write_files

    written = write_files(Path(output) / lay.group,
                          {file_name(h): t for h, t in files.items()}, prune=True,
                          fix="choose another directory with -o")
    for path in written.values():
        click.echo(str(path))


@main.command("walblib-config")
@layout_argument
@click.option("--bin-dir", default="/usr/local/bin/", show_default=True,
              help="Where walbc lives on the machine that runs the walblib script.")
@friendly
def walblib_config(layout: str, bin_dir: str) -> None:
    """Print a walb-config.py for upstream's Python 2 walblib.

    It declares the same servers (ServerConnectionParam, ServerStartupParam), the same
    ServerLayout (first archive primary, proxies in priority order) and a Controller, so
    existing walblib scripts drive the containerized group:

    \b
      walbctr walblib-config layout.yaml > walb-config.py
      python2 -c "execfile('walb-config.py'); print walbc.get_host_type(a0)"
    """
    from walbctr.render.walblib import walblib_config as config

    click.echo(config(load(layout), bin_dir), nl=False)


@main.command()
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Write to this file instead of standard output.")
@friendly
def schema(output: str | None) -> None:
    """Print the JSON Schema of the layout file.

    Point your editor at it for completion and checking, e.g. with the YAML language
    server: put '# yaml-language-server: $schema=layout.schema.json' on a layout's first
    line.
    """
    from walbctr.layout.schema import layout_schema

    text = layout_schema()
    if output:
        Path(output).write_text(text, encoding="utf-8")
    else:
        click.echo(text, nl=False)


def _progress_mode(plain: bool, quiet: bool) -> ProgressMode:
    if quiet:
        return "quiet"
    if plain or not sys.stderr.isatty():
        return "plain"
    return "live"


@main.command()
@click.option("--source", metavar="URL|DIR", envvar="WALBCTR_SOURCE",
              help="walb-tools to compile: a git URL, or a local checkout or unpacked "
                   "tarball (no .git needed). Default: $WALBCTR_SOURCE, else upstream, "
                   "pinned.")
@click.option("--ref", metavar="REF",
              help="Commit, tag or branch to fetch with a URL source. Default: the pinned "
                   "v1.0.19 commit d7295d2.")
@click.option("--base-image", metavar="IMAGE",
              help="Base for both stages instead of debian:bookworm-slim (or walbctr's own "
                   "bases when that cannot be had).")
@click.option("--all-tools", is_flag=True,
              help="Build all of walb-tools' ~50 tools (make build), not just the servers "
                   "and clients (make core).")
@click.option("-t", "--tag", "tags", multiple=True, metavar="TAG",
              help="An extra tag for the image (repeatable).")
@click.option("--no-cache", is_flag=True, help="Rebuild every step.")
@click.option("--no-pull", is_flag=True, help="Never try to pull a base image.")
@click.option("--plain", is_flag=True, help="Plain build log lines (for CI logs).")
@click.option("-q", "--quiet", is_flag=True, help="No progress; only the result or error.")
@friendly
def build(source: str | None, ref: str | None, base_image: str | None, all_tools: bool,
          tags: tuple[str, ...], no_cache: bool, no_pull: bool, plain: bool,
          quiet: bool) -> None:
    """Build the walb-tools image that layouts run.

    Compiles walb-tools (make core DISABLE_COMMIT_ID=1) in a builder stage and copies the
    stripped executables into a runtime stage with the libraries and the LVM, dmsetup and
    util-linux tools walb calls at fixed paths. The tag encodes the walb-tools version and
    revision, e.g. walbctr/walb-tools:1.0.19-d7295d2, the layouts' default image.

    \b
    Without a registry: when debian:bookworm-slim is absent and cannot be pulled, the
    build creates its own bases from Debian packages (mmdebstrap + docker import, once,
    under a minute each; see 'walbctr base'); then it needs no download at all.

    \b
    Examples:
      walbctr build                                  upstream v1.0.19, pinned
      walbctr build --source ~/src/walb-tools        a local tree
      walbctr build --source URL --ref v1.0.18       another revision
    """
    from walbctr.errors import warn
    from walbctr.image.build import build as run_build
    from walbctr.image.build import human_size

    mode = _progress_mode(plain, quiet)
    echo = (lambda _text: None) if mode == "quiet" else warn
    built = run_build(source=source, ref=ref, base_image=base_image,
                      target="build" if all_tools else "core", extra_tags=tags,
                      no_cache=no_cache, pull=not no_pull, progress=mode, echo=echo)
    click.echo(f"{built.tag} {built.image_id} {human_size(built.size)} "
               f"(built in {built.seconds:.1f} s)")
    if built.keeper_tag:
        click.echo(f"{built.keeper_tag} (the keeper, for layouts with a monitor block)")


@main.command()
@click.option("--force", is_flag=True, help="Recreate the bases even if present.")
@click.option("--plain", is_flag=True, help="Show mmdebstrap's output.")
@friendly
def base(force: bool, plain: bool) -> None:
    """Create walbctr's base images from Debian packages, without a registry.

    \b
    walbctr/base:bookworm-runtime  Debian minbase + what walb-tools loads and calls
    walbctr/base:bookworm-build    Debian minbase + compiler and headers

    mmdebstrap builds each root filesystem from Debian's package archive (no image
    registry involved) and 'docker import' loads it. 'walbctr build' does this by
    itself when it needs to. For a site with no network at all: run this where Debian
    packages can be reached, then 'docker save' the two images and 'docker load' them
    there.
    """
    from walbctr.docker.engine import Engine
    from walbctr.errors import warn
    from walbctr.image.build import ensure_bases
    from walbctr.image.recipe import recipe_dir

    engine = Engine()
    engine.api  # noqa: B018 (fail early when the engine is unreachable)
    dockerfile = (recipe_dir() / "Dockerfile").read_text()
    for tag in ensure_bases(engine, dockerfile, warn, plain, force=force):
        image = engine.api.images.get(tag)
        click.echo(f"{tag} {image.id} {int(image.attrs.get('Size', 0)) / 1e6:.1f} MB")


# --- running the group --------------------------------------------------------------------


def _split_layout(args: tuple[str, ...]) -> tuple[str, list[str]]:
    """[LAYOUT] REST...: the first argument is the layout when it names a YAML file."""
    if args and (args[0].endswith((".yaml", ".yml")) or Path(args[0]).is_file()):
        return args[0], list(args[1:])
    return DEFAULT_LAYOUT, list(args)


host_option = click.option("--host", "host", metavar="HOST",
                           help="Only the servers on this host.")
plain_option = click.option("--plain", is_flag=True,
                            help="One line per state change instead of a live table (CI).")
quiet_option = click.option("-q", "--quiet", is_flag=True, help="Print only the result.")


def gate_options(func: F) -> F:
    """The options `upgrade` and `restart` share: how many at once, and the gates."""
    for option in reversed((
        click.option("--parallel-per-tier", type=click.IntRange(1), default=1,
                     show_default=True, metavar="N",
                     help="Servers of one tier replaced at the same time."),
        click.option("--gate-timeout", type=click.FloatRange(0), default=600,
                     show_default=True, metavar="SECONDS",
                     help="How long to wait for an archive's running action before "
                          "stopping the run."),
        click.option("--force", is_flag=True,
                     help="Do not wait for archive actions (a graceful shutdown still waits "
                          "until the stop_grace_period), go on despite an overflow or send "
                          "error, accept changed volume states."))):
        func = option(func)
    return func


@main.command()
@layout_argument
@host_option
@click.option("--timeout", type=click.IntRange(1), metavar="SECONDS",
              help="Seconds each server may take to answer walbc. Default: its "
                   "start_period (archive 600, proxy 60, storage 120; set in the layout).")
@click.option("--push", "push_image", is_flag=True,
              help="Copy the image to hosts that lack it first (see 'walbctr push').")
@click.option("--build", "build_image", is_flag=True,
              help="Build the image first if this machine lacks it (without asking).")
@click.option("--source", metavar="URL|DIR", envvar="WALBCTR_SOURCE",
              help="With a build: the walb-tools to compile (see 'walbctr build'). "
                   "Default: $WALBCTR_SOURCE, else upstream v1.0.19, pinned.")
@click.option("--yes", is_flag=True,
              help="Recreate servers whose image alone changed without asking (see "
                   "'walbctr upgrade', the safe way to change the image).")
@plain_option
@quiet_option
@friendly
def up(layout: str, host: str | None, timeout: int | None, push_image: bool, build_image: bool,
       source: str | None, yes: bool, plain: bool, quiet: bool) -> None:
    """Bring the group up: archives, then proxies, then storages, healthy.

    Validates and renders LAYOUT, checks every host first (engine, image, ports), then
    applies each host's compose file in tiers across all hosts: every archive answers
    walbc before any proxy starts, every proxy before any storage starts (walbctr asks
    each started server itself, several times a second). Running it again with an
    unchanged layout changes nothing; a changed server is recreated alone; a restart
    policy that an interrupted down or restart left lifted is put back.

    If a tier fails, the error names the server, its host, the exit status and log lines
    of the run that failed, and how often it was restarted; later tiers are not started
    and what started is left running for inspection.

    \b
    On this machine's engine, a missing image is built (on a terminal after asking;
    with --build without), and an archive with lab_vg_size gets its VG on a loop file.
    """
    from walbctr.commands.bootstrap import build_command, next_steps, prepare
    from walbctr.commands.deploy import ImageChangeError, ImageMissingError
    from walbctr.commands.deploy import up as run_up
    from walbctr.errors import warn

    lay = load(layout)
    mode = _progress_mode(plain, quiet)
    if push_image:
        _push(lay, host, quiet)
    prepare(lay, lay.select_hosts(host), build=build_image, source=source,
            confirm=lambda q: sys.stdin.isatty() and click.confirm(q, default=True, err=True),
            command=build_command(layout, source, host), progress=mode,
            echo=(lambda _t: None) if quiet else warn)
    try:
        done = run_up(lay, only_host=host, timeout=timeout, mode=mode,
                      allow_image_change=yes)
    except ImageChangeError as err:
        if not sys.stdin.isatty() or not click.confirm(
                f"{err}\nrecreate them with 'walbctr up' anyway?", default=False, err=True):
            raise
        done = run_up(lay, only_host=host, timeout=timeout, mode=mode,
                      allow_image_change=True)
    except ImageMissingError as err:
        if push_image or not err.remote or not sys.stdin.isatty() or not click.confirm(
                f"{err.message}\ncopy it from this machine now?", err=True):
            raise
        _push(lay, host, quiet)
        done = run_up(lay, only_host=host, timeout=timeout, mode=mode,
                      allow_image_change=yes)
    total = sum(len(ids) for ids in (done.created, done.recreated, done.restarted,
                                     done.started, done.unchanged))
    if done.repaired:
        click.echo(f"restored the restart policy of {', '.join(done.repaired)} (an "
                   "interrupted down or restart had lifted it)", err=True)
    if not (done.created or done.recreated or done.restarted or done.started):
        click.echo(f"group {lay.group}: {total} servers healthy, nothing to change "
                   f"({done.seconds:.1f} s)")
        return
    parts = [f"{len(v)} {k}" for k, v in (("created", done.created),
                                         ("recreated", done.recreated),
                                         ("restarted", done.restarted),
                                         ("started", done.started),
                                         ("unchanged", done.unchanged)) if v]
    click.echo(f"group {lay.group}: {total} servers healthy ({', '.join(parts)}) in "
               f"{done.seconds:.1f} s")
    if done.created and not quiet:
        click.echo(next_steps(lay, layout))


@main.command()
@click.argument("args", nargs=-1, metavar="[LAYOUT] [ID]...")
@host_option
@click.option("--purge-lab", is_flag=True,
              help="Also remove the lab VGs walbctr made for the layout's archives "
                   "(lab_vg_size): VG, loop device and file. Never a VG it did not make. "
                   "Asks first on a terminal.")
@click.option("--yes", "-y", is_flag=True, help="With --purge-lab: do not ask.")
@plain_option
@quiet_option
@friendly
def down(args: tuple[str, ...], host: str | None, purge_lab: bool, yes: bool, plain: bool,
         quiet: bool) -> None:
    """Stop and remove the group's containers (or only the servers ID...).

    Storages stop first, then proxies, then archives; each gets 'walbc shutdown
    graceful', then SIGTERM after its stop_grace_period. Base dirs, log files and LVM
    volumes are never removed: 'walbctr up' later finds them as they were. With
    --purge-lab, the lab VGs walbctr made (lab_vg_size) go too, and only those.
    """
    from walbctr.commands.deploy import down as run_down
    from walbctr.commands.lab import plan_purge, purge

    layout, ids = _split_layout(args)
    lay = load(layout)
    if purge_lab and (ids or host):
        raise click.UsageError("--purge-lab takes the whole group down: give no ids or --host")
    plan = plan_purge(lay) if purge_lab else None  # refuses before anything stops
    if plan is not None and not yes and sys.stdin.isatty():
        vgs = ", ".join(f"{lab.vg.name} (on {lab.vg.file})" for lab, _ in plan.labs)
        if not click.confirm(f"Remove the lab volume group(s) {vgs} with every logical "
                             "volume in them, the archives' backups included?"):
            raise WalbctrError("nothing was stopped or removed",
                               f"run 'walbctr down {lay.source}' without --purge-lab to "
                               "keep the lab VG, or add --yes to skip this question")
    mode = _progress_mode(plain, quiet)
    removed = run_down(lay, ids or None, only_host=host, mode=mode)
    kept = ", ".join(sorted({s.base_dir for s in lay.servers if s.id in removed})) or "-"
    click.echo(f"group {lay.group}: removed {len(removed)} containers; data kept in {kept}")
    for line in purge(lay, plan) if plan is not None else []:
        click.echo(line)


@main.command()
@click.argument("args", nargs=-1, metavar="[LAYOUT] [ID]...")
@host_option
@click.option("--timeout", type=click.IntRange(1), metavar="SECONDS",
              help="Seconds each server may take to answer walbc again. Default: its "
                   "start_period.")
@gate_options
@plain_option
@quiet_option
@friendly
def restart(args: tuple[str, ...], host: str | None, timeout: int | None,
            parallel_per_tier: int, gate_timeout: float, force: bool, plain: bool,
            quiet: bool) -> None:
    """Rolling restart of servers (all, or ID...), with walb's gates and kicks.

    One server at a time (--parallel-per-tier N for more), archives, then proxies, then
    storages, each answering walbc before the next, with the gates and follow-ups of
    'walbctr upgrade' (see 'walbctr upgrade --help'): an archive's running
    merge/apply/restore/replication/resize is waited for, an overflow or a wdiff send
    error refuses (--force goes on), volume states are checked after, and the proxies
    (after an archive) and storages (after a proxy) are kicked. Every stop is 'walbc
    shutdown graceful'.
    """
    from walbctr.commands.upgrade import Options, rolling_restart, summary

    layout, ids = _split_layout(args)
    lay = load(layout)
    mode = _progress_mode(plain, quiet)
    options = Options(parallel=parallel_per_tier, gate_timeout=gate_timeout, force=force,
                      timeout=timeout)
    done = rolling_restart(lay, ids or None, only_host=host, options=options, mode=mode)
    for line in summary(done, lay):
        click.echo(line)


@main.command()
@layout_argument
@click.option("--image", metavar="IMAGE",
              help="The image to upgrade to; it must be the one LAYOUT names (edit 'image:' "
                   "in LAYOUT first). Default: LAYOUT's image.")
@click.option("--resume", is_flag=True,
              help="Finish the last upgrade, interrupted or stopped by a gate.")
@click.option("--rollback", is_flag=True,
              help="Return every server the last upgrade touched to the image it ran before "
                   "(storages first), with the same gates.")
@click.option("--hosts", metavar="H1,H2",
              help="A canary: only the servers on these hosts this time; the rest wait, "
                   "paused, for a later --resume.")
@click.option("--limit", type=click.IntRange(1), metavar="N",
              help="Upgrade at most N servers (in the usual order), then stop, paused; "
                   "--resume continues.")
@click.option("--pause", is_flag=True,
              help="Ask the running upgrade (from another terminal), or else the next one, to "
                   "stop after the server it is on and record itself paused.")
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option("--timeout", type=click.IntRange(1), metavar="SECONDS",
              help="Seconds each server may take to answer walbc after its start. Default: "
                   "its start_period.")
@gate_options
@plain_option
@quiet_option
@friendly
def upgrade(layout: str, image: str | None, resume: bool, rollback: bool, hosts: str | None,
            limit: int | None, pause: bool, dry_run: bool, timeout: int | None,
            parallel_per_tier: int, gate_timeout: float, force: bool, plain: bool,
            quiet: bool) -> None:
    """Upgrade the group's servers to a new image, one at a time, with walb's gates.

    \b
    First set 'image: NEW' in LAYOUT (the layout says what runs), then:
      walbctr upgrade LAYOUT --dry-run      the plan
      walbctr upgrade LAYOUT                do it
      walbctr upgrade LAYOUT --limit 1      a canary: one server (or --hosts H1,H2), paused
      walbctr upgrade LAYOUT --pause        (another terminal) stop after the current server
      walbctr upgrade LAYOUT --resume       go on: a paused, interrupted or stopped upgrade
      walbctr upgrade LAYOUT --rollback     back to the image each server ran before

    Archives, then proxies, then storages; each server is recreated on the new image
    ('walbc shutdown graceful', then compose up of that service alone) and must answer
    walbc before the next. Before a stop: an archive must run no Merge, Apply, Restore,
    ReplSyncAsClient or Resize (waits up to --gate-timeout), a storage no overflowed
    volume, a proxy no wdiff send error (--force goes on). After a start: every volume in
    the state it had (a proxy volume that was Stopped is stopped again: walb-proxy starts
    them all). Then walb's follow-ups: the proxies are kicked after an archive, the
    storages after a proxy. The plan and progress are kept in walbctr's state dir; a
    server failing a gate stops the upgrade, and the message says what to run next.

    --limit N and --hosts H1,H2 do a part of the plan, in the same order (a storage is
    never upgraded before the proxies it sends to), and record the rest paused; --pause
    (from another terminal) makes the running upgrade stop after the server it is on;
    'walbctr status' shows a group left part-way; --resume goes on.
    """
    from walbctr.commands.upgrade import Options, Selection, request_pause, summary
    from walbctr.commands.upgrade import upgrade as run_upgrade
    from walbctr.errors import warn

    if resume and rollback:
        raise click.UsageError("give --resume or --rollback, not both")
    if pause and (resume or rollback or hosts or limit or dry_run or image):
        raise click.UsageError("--pause only asks the running upgrade to stop: give it alone "
                               "(with LAYOUT)")
    lay = load(layout)
    if pause:
        click.echo(request_pause(lay))
        return
    select = Selection(tuple(h.strip() for h in (hosts or "").split(",") if h.strip()), limit)
    if hosts is not None and not select.hosts:
        raise click.BadParameter("name at least one host", param_hint="--hosts")
    options = Options(parallel=parallel_per_tier, gate_timeout=gate_timeout, force=force,
                      timeout=timeout)
    done = run_upgrade(lay, image, resume=resume, rollback=rollback, dry_run=dry_run,
                       options=options, mode=_progress_mode(plain, quiet),
                       echo=click.echo, select=select)
    if dry_run:
        return
    for line in summary(done, lay):
        click.echo(line)
    for note in done.notes if not quiet else []:
        warn(f"note: {note}")


@main.command()
@click.argument("args", nargs=-1, required=True, metavar="[LAYOUT] SERVER")
@click.option("--host", "new_host", required=True, metavar="HOST",
              help="The layout host the new server runs on (one of LAYOUT's hosts).")
@click.option("--id", "new_id", metavar="ID",
              help="The new server's id. Default: the next free number (p0 -> p1).")
@click.option("--device", "devices", multiple=True, metavar="VOL=PATH",
              help="Storage: the walb device of VOL on the new host (repeatable). Default: "
                   "the path the old storage uses.")
@click.option("--write", is_flag=True,
              help="Write the edited layout in place at the end (the old one is kept as "
                   "LAYOUT.bak).")
@click.option("--dry-run", is_flag=True,
              help="Print every step and the layout edit; change nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before starting.")
@click.option("--timeout", type=click.FloatRange(min=1), default=86400, show_default=True,
              metavar="SECONDS", help="How long one volume step (a replication, a hash "
              "backup, a proxy emptying itself) may take.")
@plain_option
@quiet_option
@friendly
def replace(args: tuple[str, ...], new_host: str, new_id: str | None,
            devices: tuple[str, ...], write: bool, dry_run: bool, yes: bool, timeout: float,
            plain: bool, quiet: bool) -> None:
    """Replace SERVER by a new server on another host, as walb's doc/replace.md does.

    The new server gets SERVER's role, place in its list and options, on HOST, with a new
    id. Per role:

    \b
      proxy     start the new one, copy every volume's archive info to it, empty the old
                one (stop VOL empty) and clear it, restart the storages with the new
                -proxy list (one at a time, with the rolling restart's gates)
      archive   start the new one, replicate every volume to it; the primary: keep it
                synchronized, restart the storages with the new -archive, stop
                synchronizing at the old one; a secondary: synchronizing as before
      storage   the walb devices must exist on HOST (--device VOL=PATH), then each target
                volume goes standby on the old one, every volume is initialized on the new
                one, and the target volumes are hash backed up from it

    Then the old server is stopped gracefully; its container and data stay. Nothing is
    touched before the whole plan is known and HOST is checked; busy volumes are refused
    with the reason. --dry-run prints every walbc step and the layout edit. Run again after
    an interruption, it goes on from where the servers are.
    """
    from walbctr.commands.replace import Request, summary
    from walbctr.commands.replace import replace as run_replace
    from walbctr.errors import warn

    layout, rest = _split_layout(args)
    if len(rest) != 1:
        raise click.UsageError("give one SERVER to replace (after the layout, if any)")
    mapping = {}
    for item in devices:
        vol, sep, path = item.partition("=")
        if not sep or not vol or not path.startswith("/"):
            raise click.BadParameter(f"{item!r}: write VOL=PATH with an absolute PATH",
                                     param_hint="--device")
        mapping[vol] = path
    lay = load(layout)
    text = Path(layout).read_text(encoding="utf-8")
    request = Request(rest[0], new_host, new_id, mapping, write, dry_run, timeout)

    def confirm(lines: list[str]) -> bool:
        if yes:
            return True
        if not sys.stdin.isatty():
            raise WalbctrError("a replace needs a confirmation; nothing was done",
                               "run it in a terminal, or add --yes (see the plan with "
                               "--dry-run)")
        click.echo("\n".join(lines), err=True)
        return click.confirm("Go ahead?", default=False, err=True)

    done = run_replace(lay, text, request, mode=_progress_mode(plain, quiet), echo=click.echo,
                       confirm=confirm)
    if dry_run:
        click.echo("nothing was changed (--dry-run)")
        return
    for line in summary(done, write):
        click.echo(line)
    for note in done.notes if not quiet else []:
        warn(f"note: {note}")


@main.command("status")
@layout_argument
@host_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--volumes", is_flag=True,
              help="One row per (server, volume): walb state, overflow, send errors, backup "
                   "lag, running actions, snapshots, and problems with walb's remedy.")
@click.option("--lag-threshold", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="With --volumes: backup lag (ts-delta) that counts as a problem. Default: "
                   "the monitor block's lag_threshold, else 600.")
@friendly
def status(layout: str, host: str | None, as_json: bool, volumes: bool,
           lag_threshold: float | None) -> None:
    """One row per server: state, health, restarts, last exit, image, walb version, uptime.

    A host whose engine cannot be reached shows its servers as 'unknown' instead of
    failing the whole command. RESTARTS counts the restart policy's restarts; a server
    that restarted or stopped gets the exit status and last log line of its last run (a
    crash loop at a glance). DRIFT marks a container whose configuration or restart policy
    differs from the layout's ('walbctr up' fixes it). HEALTH is Docker's health check;
    until Docker has run it after a start, a run walbctr saw answer while starting it
    counts as healthy, and any other is asked the same probe.
    Exit status 1 when any server is not running and healthy.

    With --volumes: one walbc batch per server (all at once), one row per volume; a
    server that cannot be asked shows 'unknown'. Exit status 1 when any volume has a
    problem to act on or any server's volumes are unknown.
    """
    from walbctr.commands.status import format_duration, rows_json, status_rows, upgrade_line

    lay = load(layout)
    if volumes:
        _volume_status(lay, host, as_json, lag_threshold)
        return
    rows = status_rows(lay, host)
    if as_json:
        click.echo(rows_json(rows), nl=False)
    else:
        from walbctr.render.columns import columns

        cells = []
        for r in rows:
            state = r.state + (" (host unreachable)" if r.state == "unknown" else
                               " (not in the layout)" if r.role == "?" else
                               f" since {r.maintenance_since}" if r.state == "maintenance"
                               else "")
            cells.append((r.id, r.role, r.host, r.endpoint, state, r.health,
                          str(r.restarts) if r.restarts else "",
                          "" if r.last_exit is None else str(r.last_exit), r.image,
                          r.walb_version, format_duration(r.uptime_s), "yes" if r.drift else ""))
        click.echo(columns(("ID", "ROLE", "HOST", "ADDRESS", "STATE", "HEALTH", "RESTARTS",
                            "LAST EXIT", "IMAGE", "WALB", "UPTIME", "DRIFT"), cells), nl=False)
        for note in dict.fromkeys(r.note for r in rows if r.note):
            click.echo(note, err=True)
        line = upgrade_line(lay, rows)
        if line:
            click.echo(line)
    # A server its host's maintenance stopped is where the operator put it, and a stopped
    # server the layout no longer has (what `replace` leaves) is shown, not failed.
    if not all(r.state == "maintenance" or (r.state == "running" and r.health == "healthy")
               for r in rows if r.role != "?" or r.state == "running"):
        sys.exit(1)


main.add_command(status, "ps")


@main.group()
def maintenance() -> None:
    """Take one host's servers down on purpose, and bring them back (enter, exit, list).

    \b
      walbctr maintenance enter [LAYOUT] HOST    stop HOST's servers and hold them stopped
      walbctr maintenance exit [LAYOUT] HOST     start them again, with walb's kicks
      walbctr maintenance list [LAYOUT]          the hosts in maintenance

    While a host is in maintenance, 'up', 'restart' and 'upgrade' refuse to touch its
    servers (run them with --host of another host, or name other servers), 'status'
    shows them as 'maintenance', and the keeper neither kicks nor scans them.
    """


def _layout_and_host(args: tuple[str, ...]) -> tuple[str, str]:
    layout, rest = _split_layout(args)
    if len(rest) != 1:
        raise click.UsageError("give one HOST (after the layout file, if any)")
    return layout, rest[0]


@maintenance.command("enter")
@click.argument("args", nargs=-1, required=True, metavar="[LAYOUT] HOST")
@click.option("--duration", default="4h", show_default=True, metavar="TIME",
              help="How long the Alertmanager silence lasts (monitor.alertmanager_url): "
                   "4h, 90m, 1d12h. 'exit' expires it sooner.")
@click.option("--gate-timeout", type=click.FloatRange(0), default=600, show_default=True,
              metavar="SECONDS",
              help="How long to wait for an archive's running action before giving up.")
@click.option("--force", is_flag=True,
              help="Do not wait for archive actions (a graceful shutdown still waits until "
                   "the stop_grace_period), go on despite an overflow or send error.")
@plain_option
@quiet_option
@friendly
def maintenance_enter(args: tuple[str, ...], duration: str, gate_timeout: float,
                      force: bool, plain: bool, quiet: bool) -> None:
    """Stop HOST's servers gracefully and hold them stopped.

    First 'walbctr upgrade''s gates on each of them (an archive's running merge, apply,
    restore, replication or resize is waited for up to --gate-timeout; a storage's
    overflow or a proxy's wdiff send error refuses; --force goes on). Then storages,
    proxies, archives, each with 'walbc shutdown graceful' and its restart policy set to
    'no', so that Docker does not bring it back, not even after a reboot. Containers and
    data stay. The host is recorded in walbctr's state dir, the keeper is told, and an
    Alertmanager silence is made when the layout's monitor block names one. Run it again
    to finish an interrupted one (and to tell a restarted keeper again).
    """
    from walbctr.commands.maintenance import enter, parse_duration
    from walbctr.commands.upgrade import Options
    from walbctr.errors import warn

    layout, host = _layout_and_host(args)
    try:
        seconds = parse_duration(duration)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--duration") from None
    lay = load(layout)
    report = enter(lay, host, options=Options(gate_timeout=gate_timeout, force=force),
                   duration_s=seconds, mode=_progress_mode(plain, quiet))
    for line in report.lines:
        click.echo(line)
    for note in report.notes:
        warn(note if note.startswith(("warning:", "note:")) else f"note: {note}")


@maintenance.command("exit")
@click.argument("args", nargs=-1, required=True, metavar="[LAYOUT] HOST")
@click.option("--timeout", type=click.IntRange(1), metavar="SECONDS",
              help="Seconds each server may take to answer walbc. Default: its start_period.")
@click.option("--force", is_flag=True,
              help="Accept volumes whose state changed while the host was down.")
@plain_option
@quiet_option
@friendly
def maintenance_exit(args: tuple[str, ...], timeout: int | None, force: bool, plain: bool,
                     quiet: bool) -> None:
    """Start HOST's servers again and end its maintenance.

    Archives, then proxies, then storages, each answering walbc before the next tier; the
    restart policy each had is put back; every volume must be in the state it had before
    (a proxy volume that was Stopped is stopped again, since walb-proxy starts them all;
    --force accepts other changes). Then walb's follow-ups: the proxies are kicked after an
    archive, the storages after a proxy. The record is dropped, the keeper told, the
    Alertmanager silence expired.
    """
    from walbctr.commands.maintenance import exit_
    from walbctr.commands.upgrade import Options
    from walbctr.errors import warn

    layout, host = _layout_and_host(args)
    lay = load(layout)
    report = exit_(lay, host, options=Options(force=force, timeout=timeout),
                   mode=_progress_mode(plain, quiet))
    for line in report.lines:
        click.echo(line)
    for note in report.notes:
        warn(note if note.startswith(("warning:", "note:")) else f"note: {note}")


@maintenance.command("list")
@layout_argument
@friendly
def maintenance_list(layout: str) -> None:
    """The group's hosts in maintenance: since when, which servers, the silence."""
    from walbctr.commands.maintenance import describe

    for line in describe(load(layout)):
        click.echo(line)


def _volume_status(lay: Layout, host: str | None, as_json: bool,
                   lag_threshold: float | None) -> None:
    from walbctr.commands import volume_table as vs

    rows = vs.volume_rows(lay, host, vs.lag_threshold(lay, lag_threshold))
    if as_json:
        click.echo(vs.rows_json(rows), nl=False)
    else:
        from walbctr.render.columns import columns

        cells = [vs.table_cells(r) for r in rows]
        shown = [c for c in vs.table_cells(vs.VolumeRow("", "", "", "", "")) if
                 c in ("SERVER", "ROLE", "VOLUME", "STATE", "PROBLEM") or
                 any(cell[c] for cell in cells)]
        click.echo(columns(shown, [[cell[c] for c in shown] for cell in cells]), nl=False)
        for line in vs.problem_lines(rows):
            click.echo(line, err=True)
    if any(r.needs_attention for r in rows):
        sys.exit(1)


@main.command()
@click.argument("args", nargs=-1, required=True, metavar="[LAYOUT] ID")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.option("-n", "--tail", type=click.IntRange(0), help="Only the last N lines.")
@friendly
def logs(args: tuple[str, ...], follow: bool, tail: int | None) -> None:
    """Print a server's log: the container log, or its log_path file on its host."""
    from walbctr.docker.logs import stream_logs

    layout, rest = _split_layout(args)
    if len(rest) != 1:
        raise click.UsageError("give one server id")
    with contextlib.suppress(BrokenPipeError):
        for chunk in stream_logs(load(layout), rest[0], follow, tail):
            sys.stdout.write(chunk)
            sys.stdout.flush()


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, required=True, type=click.UNPROCESSED,
                metavar="[LAYOUT] ID ARGS...")
@friendly
def walbc(args: tuple[str, ...]) -> None:
    """Run walbc against server ID, e.g. 'walbctr walbc layout.yaml s0 status'.

    walbc runs inside ID's container, so addresses resolve as the servers see them; its
    output and exit status pass through. '-a' and '-p' are filled in; put other walbc
    options (-to, -retry, -id) before the command, as walbc wants them.
    """
    from walbctr.commands.exec import walbc as run_walbc

    layout, rest = _split_layout(args)
    if len(rest) < 2:
        raise click.UsageError("give a server id and a walbc command, e.g. 's0 status'")
    sys.exit(run_walbc(load(layout), rest[0], rest[1:]))


@main.command()
@layout_argument
@host_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--textfile", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.prom",
              help="Also write the space in Prometheus' text format to FILE.prom (replaced at "
                   "once), for node_exporter's textfile collector.")
@friendly
def space(layout: str, host: str | None, as_json: bool, textfile: Path | None) -> None:
    """Size and free space of each archive's volume group and thin pool.

    LVM is asked on the archive's host, in a throwaway container with the archive's
    privileges and /dev read-only, so it works whether the archive runs or not and changes
    nothing (walbc cannot tell free space). Run it from cron with --textfile into
    node_exporter's textfile directory: the WalbArchive*FillingUp alerts predict from it.
    Exit status 1 when an archive's space could not be read.
    """
    import json
    from dataclasses import asdict

    from walbctr.commands.space import check_textfile, exposition, read_space, write_textfile
    from walbctr.render.columns import columns

    lay = load(layout)
    if textfile is not None:
        check_textfile(textfile)
    rows = read_space(lay, host)
    if textfile is not None:
        write_textfile(textfile, exposition(lay.group, rows))
    if as_json:
        click.echo(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        def gib(n: int | None) -> str:
            return "" if n is None else f"{n / 2**30:.1f}G"

        click.echo(columns(("ARCHIVE", "HOST", "VG", "SIZE", "FREE", "THINPOOL", "POOL SIZE",
                            "POOL FREE"),
                           [(r.archive, r.host, r.vg, gib(r.vg_size), gib(r.vg_free),
                             r.thinpool or "", gib(r.pool_size), gib(r.pool_free))
                            for r in rows]), nl=False)
        for r in rows:
            if r.error is not None:
                click.echo(f"{r.archive}: cannot read its space: {r.error}", err=True)
    if any(r.error is not None for r in rows):
        sys.exit(1)


@main.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, required=True, type=click.UNPROCESSED,
                metavar="[LAYOUT] ID -- CMD...")
@friendly
def exec_(args: tuple[str, ...]) -> None:
    """Run CMD in server ID's running container (e.g. -- lvs, -- wdevc list)."""
    from walbctr.commands.exec import exec_argv, replace_process

    layout, rest = _split_layout(args)
    if "--" in rest:
        cut = rest.index("--")
        rest = rest[:cut] + rest[cut + 1:]
    if len(rest) < 2:
        raise click.UsageError("give a server id and a command: ID -- CMD...")
    argv, env = exec_argv(load(layout), rest[0], rest[1:], interactive=True)
    replace_process(argv, env)


@main.command()
@click.argument("args", nargs=-1, required=True, metavar="[LAYOUT] ID")
@friendly
def shell(args: tuple[str, ...]) -> None:
    """An interactive shell in server ID's running container."""
    from walbctr.commands.exec import exec_argv, replace_process

    layout, rest = _split_layout(args)
    if len(rest) != 1:
        raise click.UsageError("give one server id")
    argv, env = exec_argv(load(layout), rest[0], ["bash"], interactive=True)
    replace_process(argv, env)


@main.command("check-host")
@layout_argument
@host_option
@click.option("--json", "as_json", is_flag=True,
              help="Machine-readable output: a list of {host, check, result, detail}.")
@friendly
def check_host(layout: str, host: str | None, as_json: bool) -> None:
    """Check hosts before deploying; report every result together.

    \b
    Per host: engine reachable and its version; the image present; privileged
    containers allowed (where servers need them); for archives, the VG (and thin pool)
    as the archive's own vgs sees it; for storages, /dev/walb/control (the walb driver;
    a warning), the WalB device of every volume in the base dir (without it the storage
    exits at start: a failure) and the kernel against walb-driver's supported range;
    base dirs and log dirs writable; ports free. Changes nothing on any host.
    Exit status 1 when any check fails (warnings do not fail).
    """
    from walbctr.commands.checkhost import FAIL, check_hosts, checks_json

    checks = check_hosts(load(layout), host)
    if as_json:
        click.echo(checks_json(checks), nl=False)
        sys.exit(1 if any(c.result == FAIL for c in checks) else 0)
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(box=None, padding=(0, 2), show_edge=False)
    for col in ("HOST", "CHECK", "RESULT", "DETAIL"):
        table.add_column(col)
    style = {"ok": "green", "warn": "yellow", "FAIL": "bold red"}
    for c in checks:
        # Layout values and tool output (lvs shows hidden LVs as [name]) are not markup.
        table.add_row(escape(c.host), escape(c.name), f"[{style[c.result]}]{c.result}[/]",
                      escape(c.detail))
    # A terminal wraps rows to its width; a pipe or a file gets each check on one line,
    # however long its paths, so that grep finds the whole row.
    Console(width=None if sys.stdout.isatty() else 1000).print(table)
    if any(c.result == FAIL for c in checks):
        sys.exit(1)


@main.command()
@layout_argument
@click.option("-o", "--output", type=click.Path(dir_okay=False), metavar="FILE",
              help="The tarball to write; it must not exist. Default: "
                   "walbctr-collect-GROUP-YYYYMMDDTHHMMSSZ.tar.gz in the current directory.")
@click.option("--log-lines", type=click.IntRange(1), default=2000, show_default=True,
              metavar="N",
              help="How many of the last lines of each server's log and the keeper's "
                   "(each also cut to its last 4 MiB).")
@quiet_option
@friendly
def collect(layout: str, output: str | None, log_lines: int, quiet: bool) -> None:
    """Write a support bundle: one tarball with what a bug report about the group needs.

    \b
      walbctr collect layout.yaml                     ./walbctr-collect-GROUP-...Z.tar.gz
      walbctr collect layout.yaml -o case-42.tar.gz   a name of your own
      tar -xOzf case-42.tar.gz --wildcards '*/MANIFEST.txt'    what is in it

    In it: the layout file as given, and per host the compose file it renders and the one
    'walbctr up' last applied, the engine's version, 'docker inspect' of the group's
    containers, each server's log (the last --log-lines lines), 'status --json', 'status
    --volumes --json' and 'check-host --json', and on the keeper's host the keeper's log
    and a snapshot of its /metrics; MANIFEST.txt says what was collected and what was not,
    and why. Left out: environment values (and log-driver options) in the inspect output,
    every file the layout names (TLS keys and certificates, the keeper's web config and
    its password hashes are never read), and docker info beyond a few engine facts.

    A host whose engine cannot be reached is recorded in MANIFEST.txt and the rest is
    collected. The file is mode 0600 and gets its name only when complete. Like
    check-host, collect changes nothing on any host. Exit status 0 when the bundle is
    written, whatever it could not collect.
    """
    from walbctr.commands.collect import collect as run_collect
    from walbctr.commands.collect import human_bytes

    lay = load(layout)
    done = run_collect(lay, output, log_lines, _progress_mode(False, quiet))
    failed = sum(not e.ok for e in done.entries)
    click.echo(f"{done.path}: {human_bytes(done.size)}, {len(done.entries) - failed} items "
               f"collected, {failed} not (MANIFEST.txt in it says why)")


@main.command()
@layout_argument
@host_option
@quiet_option
@friendly
def push(layout: str, host: str | None, quiet: bool) -> None:
    """Copy the layout's image to every host's engine, without a registry.

    Streams 'docker save' from this machine's engine into 'docker load' on each host's
    engine, all hosts at once; a host that already has the same image id is skipped, and
    the id is checked on arrival. 'walbctr up --push' does this before starting.
    """
    lay = load(layout)
    pushed = _push(lay, host, quiet)
    for p in sorted(pushed, key=lambda p: p.host):
        hosts = ", ".join(p.hosts)
        image = p.image or lay.image
        if p.skipped:
            click.echo(f"{hosts}: already has {image} ({p.seconds:.2f} s)")
        else:
            click.echo(f"{hosts}: loaded {image}, {p.megabytes:.1f} MB in "
                       f"{p.seconds:.1f} s")


def _push(lay: Layout, host: str | None, quiet: bool) -> list[Any]:
    from walbctr.image.push import push as run_push

    if quiet or not sys.stderr.isatty():
        return run_push(lay, host, lambda _h, _s, _e: None)
    from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TransferSpeedColumn

    with Progress("[bold]{task.description}", BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), transient=False) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(h: str, sent: int, expected: int) -> None:
            if h not in tasks:
                tasks[h] = bar.add_task(h, total=expected or None)
            bar.update(tasks[h], completed=sent)

        return run_push(lay, host, progress)


# --- volumes ----------------------------------------------------------------------------


@main.group(context_settings=CONTEXT)
@click.option("-l", "--layout", default=DEFAULT_LAYOUT, show_default=True, metavar="LAYOUT",
              type=click.Path(dir_okay=False), help="The group's layout ($WALBCTR_LAYOUT).")
@click.pass_context
def volume(ctx: click.Context, layout: str) -> None:
    """Back up volumes: add, snapshot, restore, replicate, and see them on every server.

    Every command derives the servers from the layout, checks the volume's state on each
    before it acts, and runs walb's own walbc steps in upstream's order (walblib's
    Controller), asking each server from inside its own container.

    \b
    The tutorial, on the lab:
      walbctr volume -l examples/lab.yaml add vol0 --storage s0 --device /dev/walb/vol0
      walbctr volume -l examples/lab.yaml snapshot vol0          # prints the gid
      walbctr volume -l examples/lab.yaml restore vol0 GID       # prints the device
      walbctr volume -l examples/lab.yaml show vol0
      walbctr volume -l examples/lab.yaml replicate vol0 --to a1
    From Python: walbctr.group.Group.load("layout.yaml") has the same operations.
    """
    ctx.obj = layout


def _group(ctx: click.Context) -> Any:
    from walbctr.group import Group

    return Group(load(ctx.obj))


def _long_work(plain: bool, quiet: bool) -> Any:
    from walbctr.display import StepProgress

    return StepProgress(_progress_mode(plain, quiet))


timeout_option = click.option("--timeout", type=click.FloatRange(min=1), default=None,
                              metavar="SECONDS", help="Give up waiting after this long "
                              "(walb goes on; run the command again to wait more).")
archive_option = click.option("--archive", metavar="ID",
                              help="The archive to use (default: the primary, the first).")


@volume.command("add")
@click.argument("vol")
@click.option("--storage", required=True, metavar="ID", help="The storage whose device it is.")
@click.option("--device", required=True, metavar="PATH",
              help="The walb device on that storage's host, e.g. /dev/walb/vol0.")
@archive_option
@click.option("--hash", "hash_backup", is_flag=True,
              help="Hash backup instead of full: only blocks that differ from the archive's "
              "copy are sent (the remedy for an overflowed log).")
@timeout_option
@plain_option
@quiet_option
@click.pass_context
@friendly
def volume_add(ctx: click.Context, vol: str, storage: str, device: str, archive: str | None,
               hash_backup: bool, timeout: float | None, plain: bool, quiet: bool) -> None:
    """Start backing up VOL: init it on the storage and the primary archive, tell every
    proxy (in priority order) where the archive is, and run a full backup with progress
    until the first restorable snapshot. Interrupted, it continues when run again."""
    from walbctr.commands.volume import progress_of
    from walbctr.group import DEFAULT_TIMEOUT_S

    grp = _group(ctx)
    with _long_work(plain, quiet) as shown:
        gid = grp.add(vol, storage, device, hash_backup=hash_backup, archive=archive,
                      timeout_s=timeout or DEFAULT_TIMEOUT_S, progress=progress_of(shown))
    click.echo(f"{vol}: backed up on {grp.layout.primary_archive.id}, restorable gid {gid}")


@volume.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
@friendly
def volume_list(ctx: click.Context, as_json: bool) -> None:
    """Every volume any server knows, its state on each server, and its restorable
    snapshots per archive (one query per server)."""
    from walbctr.commands.volume import as_json as dump
    from walbctr.commands.volume import list_table

    grp = _group(ctx)
    rows = grp.volumes()
    click.echo(dump(rows) if as_json else list_table(rows, [s.id for s in grp.layout.servers]),
               nl=False)


@volume.command("show")
@click.argument("vol")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
@friendly
def volume_show(ctx: click.Context, vol: str, as_json: bool) -> None:
    """VOL on every server: state, restorable and restored snapshots, diffs and their
    size, the base image, the latest snapshot."""
    from walbctr.commands.volume import as_json as dump
    from walbctr.commands.volume import show_text

    info = _group(ctx).show(vol)
    click.echo(dump(info) if as_json else show_text(info), nl=False)


@volume.command("snapshot")
@click.argument("vol")
@timeout_option
@plain_option
@quiet_option
@click.pass_context
@friendly
def volume_snapshot(ctx: click.Context, vol: str, timeout: float | None, plain: bool,
                    quiet: bool) -> None:
    """Take a snapshot of VOL on its storage and wait until the primary archive can
    restore it; print its gid."""
    from walbctr.commands.volume import progress_of

    with _long_work(plain, quiet) as shown:
        gid = _group(ctx).snapshot(vol, timeout_s=timeout or 600, progress=progress_of(shown))
    click.echo(gid)


@volume.command("restore")
@click.argument("vol")
@click.argument("gid", type=click.IntRange(0))
@archive_option
@timeout_option
@plain_option
@quiet_option
@click.pass_context
@friendly
def volume_restore(ctx: click.Context, vol: str, gid: int, archive: str | None,
                   timeout: float | None, plain: bool, quiet: bool) -> None:
    """Restore snapshot GID of VOL as a new volume on the archive; print its device."""
    from walbctr.commands.volume import progress_of
    from walbctr.group import DEFAULT_TIMEOUT_S

    grp = _group(ctx)
    with _long_work(plain, quiet) as shown:
        grp.restore(vol, gid, archive=archive, timeout_s=timeout or DEFAULT_TIMEOUT_S,
                    progress=progress_of(shown))
    click.echo(grp.restored_path(vol, gid, archive))


@volume.command("restored")
@click.argument("vol")
@archive_option
@click.pass_context
@friendly
def volume_restored(ctx: click.Context, vol: str, archive: str | None) -> None:
    """The restored snapshots of VOL on the archive: gid and device, one a line."""
    grp = _group(ctx)
    for gid in grp.restored(vol, archive):
        click.echo(f"{gid} {grp.restored_path(vol, gid, archive)}")


@volume.command("del-restored")
@click.argument("vol")
@click.argument("gid", type=click.IntRange(0))
@archive_option
@click.pass_context
@friendly
def volume_del_restored(ctx: click.Context, vol: str, gid: int, archive: str | None) -> None:
    """Delete the restored volume of snapshot GID (the backup itself stays)."""
    _group(ctx).del_restored(vol, gid, archive=archive)
    click.echo(f"{vol}: restored gid {gid} deleted")


@volume.command("replicate")
@click.argument("vol")
@click.option("--to", "to", required=True, metavar="ID", help="The archive to copy to.")
@click.option("--from", "source", metavar="ID", help="The archive to copy from (default: the "
              "primary).")
@click.option("--sync", is_flag=True, help="Then keep it synchronized: every proxy sends the "
              "volume's diffs to it too.")
@timeout_option
@plain_option
@quiet_option
@click.pass_context
@friendly
def volume_replicate(ctx: click.Context, vol: str, to: str, source: str | None, sync: bool,
                     timeout: float | None, plain: bool, quiet: bool) -> None:
    """Copy VOL's backup to another archive, up to its newest restorable snapshot
    (a full copy the first time, the missing diffs after)."""
    from walbctr.commands.volume import progress_of
    from walbctr.group import DEFAULT_TIMEOUT_S

    with _long_work(plain, quiet) as shown:
        gid = _group(ctx).replicate(vol, to, source=source, sync=sync,
                                    timeout_s=timeout or DEFAULT_TIMEOUT_S,
                                    progress=progress_of(shown))
    click.echo(f"{vol}: replicated to {to} up to gid {gid}" + (", kept in sync" if sync else ""))


server_option = click.option("--server", "server", required=True, metavar="ID",
                             help="The server to act on.")


@volume.command("stop")
@click.argument("vol")
@server_option
@click.option("--mode", type=click.Choice(["graceful", "force", "empty"]), default="graceful",
              show_default=True, help="empty: a proxy first sends what it holds.")
@click.pass_context
@friendly
def volume_stop(ctx: click.Context, vol: str, server: str, mode: str) -> None:
    """Stop VOL on one server (a storage stops sending, a proxy forwarding, an archive
    receiving)."""
    click.echo(f"{vol} on {server}: {_group(ctx).stop(vol, server, mode)}")


@volume.command("start")
@click.argument("vol")
@server_option
@click.pass_context
@friendly
def volume_start(ctx: click.Context, vol: str, server: str) -> None:
    """Start VOL on one server again (a storage as the target)."""
    click.echo(f"{vol} on {server}: {_group(ctx).start(vol, server)}")


@volume.command("reset")
@click.argument("vol")
@server_option
@click.pass_context
@friendly
def volume_reset(ctx: click.Context, vol: str, server: str) -> None:
    """reset-vol on a storage or archive: back to SyncReady, ready for a new backup."""
    click.echo(f"{vol} on {server}: {_group(ctx).reset(vol, server)}")


@volume.command("remove")
@click.argument("vol")
@click.option("--delete-archive-data", "archives", multiple=True, metavar="ARCHIVE",
              help="Also delete the backups of VOL on this archive (by name; repeatable).")
@click.option("-y", "--yes", is_flag=True, help="Do not ask.")
@click.pass_context
@friendly
def volume_remove(ctx: click.Context, vol: str, archives: tuple[str, ...], yes: bool) -> None:
    """Stop backing up VOL: clear it on every storage and proxy. Archives keep their
    backups unless named with --delete-archive-data."""
    grp = _group(ctx)
    what = "its storages and proxies" + (
        f", and DELETE its backups on {', '.join(archives)}" if archives else
        " (the archives keep its backups)")
    if not yes:
        if not sys.stdin.isatty():
            raise WalbctrError(f"removing {vol} from {what} needs a confirmation",
                               "run it in a terminal, or add --yes")
        click.confirm(f"Remove {vol} from {what}?", abort=True)
    cleared = grp.remove(vol, archive_data=archives)
    click.echo(f"{vol}: cleared on {', '.join(cleared) or 'no server (it was nowhere)'}")
