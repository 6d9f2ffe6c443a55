"""Live terminal displays (rich): build steps now, server states for `up` later."""

from __future__ import annotations

import time
from types import TracebackType
from typing import ClassVar, Literal

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from walbctr.image.buildlog import BuildLog, Step

# live: a table redrawn in place (a terminal); plain: a line per change (CI logs); quiet.
ProgressMode = Literal["live", "plain", "quiet"]

_MARK = {"running": ("…", "yellow"), "done": ("✓", "green"), "cached": ("✓", "cyan"),
         "failed": ("✗", "red")}


class BuildDisplay:
    def __init__(self, log: BuildLog) -> None:
        self.log = log
        self.console = Console(stderr=True)
        self.started: dict[str, float] = {}
        self.live = Live(console=self.console, refresh_per_second=4, transient=False)
        self.last_output = ""

    def __enter__(self) -> BuildDisplay:
        self.live.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.live.update(self._render(final=True))
        self.live.__exit__(kind, err, tb)

    def update(self, step: Step | None) -> None:
        if step is not None:
            self.started.setdefault(step.key, time.monotonic())
            if step.status == "running" and step.tail:
                self.last_output = step.tail[-1]
        self.live.update(self._render())

    def _render(self, final: bool = False) -> Group:
        table = Table.grid(padding=(0, 1))
        for step in self.log.user_steps:
            mark, style = _MARK[step.status]
            if step.status == "cached":
                when = "cached"
            elif step.seconds is not None:
                when = f"{step.seconds:.1f}s"
            else:
                when = f"{time.monotonic() - self.started.get(step.key, time.monotonic()):.0f}s"
            table.add_row(Text(mark, style=style), Text(step.name[:90], overflow="ellipsis"),
                          Text(when, style="dim"))
        parts: list[Table | Text] = [table]
        if not final and self.last_output:
            parts.append(Text("  " + self.last_output[:110], style="dim"))
        return Group(*parts)


class ServerBoard:
    """Each server's state during `up`, `down` and `restart`: live, plain lines, or quiet."""

    STYLE: ClassVar[dict[str, str]] = {
        "pending": "dim", "created": "yellow", "starting": "yellow", "healthy": "green",
        "failed": "red", "stopping": "yellow", "stopped": "cyan", "removed": "cyan",
        "unchanged": "green"}

    def __init__(self, rows: list[tuple[str, str, str]], mode: ProgressMode) -> None:
        """rows: (server id, role, host), in start order."""
        self.rows = rows
        self.mode = mode
        self.state = {sid: "pending" for sid, _, _ in rows}
        self.since = {sid: time.monotonic() for sid, _, _ in rows}
        self.took: dict[str, float] = {}
        self.started = time.monotonic()
        self.console = Console(stderr=True)
        self.live: Live | None = None

    def __enter__(self) -> ServerBoard:
        if self.mode == "live":
            self.live = Live(self._render(), console=self.console, refresh_per_second=4)
            self.live.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.live is not None:
            self.live.update(self._render())
            self.live.__exit__(kind, err, tb)

    def begin(self, sid: str) -> None:
        self.since[sid] = time.monotonic()

    def set(self, sid: str, state: str) -> None:
        if self.state.get(sid) == state:
            return
        self.state[sid] = state
        elapsed = time.monotonic() - self.since[sid]
        if state in ("healthy", "failed", "stopped", "removed", "unchanged"):
            self.took[sid] = elapsed
        if self.mode == "plain":
            role, host = next((r, h) for s, r, h in self.rows if s == sid)
            total = time.monotonic() - self.started
            self.console.print(f"[{total:6.1f}s] {sid} ({role} on {host}): {state}"
                               + (f" after {elapsed:.1f}s" if sid in self.took else ""),
                               highlight=False)
        elif self.live is not None:
            self.live.update(self._render())

    def tick(self) -> None:
        if self.live is not None:
            self.live.update(self._render())

    def _render(self) -> Table:
        table = Table(box=None, padding=(0, 2), show_edge=False)
        for column in ("server", "role", "host", "state", "time"):
            table.add_column(column, style="bold" if column == "server" else None)
        now = time.monotonic()
        for sid, role, host in self.rows:
            state = self.state[sid]
            took = self.took.get(sid)
            running = state not in ("pending",) and took is None
            when = f"{took:.1f}s" if took is not None else (
                f"{now - self.since[sid]:.0f}s" if running else "")
            table.add_row(sid, role, host, Text(state, style=self.STYLE.get(state, "")), when)
        return table


class StepProgress:
    """A long volume operation: live, a bar while walb reports progress and the step's
    words otherwise; plain, one line per new step and per tenth of a transfer."""

    def __init__(self, mode: ProgressMode) -> None:
        self.mode = mode
        self.console = Console(stderr=True)
        self.last = ""
        self.tenth = -1
        self.live = Live(console=self.console, refresh_per_second=4, transient=True) \
            if mode == "live" else None
        self.started = time.monotonic()

    def __enter__(self) -> StepProgress:
        if self.live is not None:
            self.live.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.live is not None:
            self.live.stop()

    def update(self, step: str, done_lb: int | None = None, total_lb: int | None = None) -> None:
        if self.mode == "quiet":
            return
        share = done_lb / total_lb if done_lb and total_lb else None
        if self.live is not None:
            self.live.update(self._render(step, share))
            if step != self.last:
                self.console.print(f"{time.monotonic() - self.started:6.1f}s  {step}")
        elif step != self.last or (share is not None and int(share * 10) != self.tenth):
            pct = f" ({share:.0%} of {total_lb * 512 / 2**20:.0f} MiB)" \
                if share is not None and total_lb else ""
            self.console.print(f"{time.monotonic() - self.started:6.1f}s  {step}{pct}",
                               highlight=False)
        self.last = step
        self.tenth = int(share * 10) if share is not None else -1

    def _render(self, step: str, share: float | None) -> Text:
        if share is None:
            return Text(f"… {step}", style="yellow")
        width = 30
        full = int(share * width)
        return Text(f"[{'#' * full}{'.' * (width - full)}] {share:4.0%}  {step}", style="yellow")


class StepLines:
    """One line per step on standard error, stamped with the seconds since the start, as
    ServerBoard's plain mode prints them: for a one-shot command whose steps (hosts
    collected, say) finish in any order and need no live table. Quiet prints nothing."""

    def __init__(self, mode: ProgressMode) -> None:
        self.mode = mode
        self.started = time.monotonic()
        self.console = Console(stderr=True)

    def line(self, text: str) -> None:
        if self.mode == "quiet":
            return
        total = time.monotonic() - self.started
        # Host names and errors are not markup; several threads may print at once, and
        # rich's console prints each call whole.
        self.console.print(f"[{total:6.1f}s] {text}", highlight=False, markup=False,
                           soft_wrap=True)
