"""Build progress: BuildKit's plain output (and the classic builder's) read into steps.

Pure: lines in, step states out. The live display and the failure report both read it.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field

_LINE = re.compile(r"^#(\d+) (.*)$")
_NAME = re.compile(r"^\[([^\]]+)\] (.*)$")
_OUTPUT = re.compile(r"^\d+\.\d+ (.*)$")
_DONE = re.compile(r"^DONE (\d+(?:\.\d+)?)s$")
_CLASSIC_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
TAIL = 20


@dataclass
class Step:
    key: str
    name: str
    status: str = "running"  # running, done, cached, failed
    seconds: float | None = None
    error: str = ""
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL))

    @property
    def is_internal(self) -> bool:
        return self.name.startswith(("[internal]", "[auth]", "building with", "exporting",
                                     "writing image", "naming to"))


@dataclass
class BuildLog:
    steps: dict[str, Step] = field(default_factory=dict)
    other: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL))
    _classic_current: str | None = None

    def feed(self, line: str) -> Step | None:
        """Take one line of output; return the step it concerned, if any."""
        line = line.rstrip("\n")
        m = _LINE.match(line)
        if m:
            return self._buildkit(m.group(1), m.group(2))
        m = _CLASSIC_STEP.match(line)
        if m:
            previous = self.steps.get(self._classic_current or "")
            if previous is not None and previous.status == "running":
                previous.status = "done"
            key = f"classic-{m.group(1)}"
            self._classic_current = key
            step = self.steps[key] = Step(key, f"[{m.group(1)}/{m.group(2)}] {m.group(3)}")
            return step
        if self._classic_current is not None and line.strip():
            step = self.steps[self._classic_current]
            if line.startswith(" ---> Using cache"):
                step.status = "cached"
            else:
                step.tail.append(line)
            return step
        if line.strip():
            self.other.append(line)
        return None

    def _buildkit(self, key: str, rest: str) -> Step:
        step = self.steps.get(key)
        if step is None:
            named = _NAME.match(rest)
            step = self.steps[key] = Step(key, f"[{named.group(1)}] {named.group(2)}"
                                          if named else rest)
            return step
        done = _DONE.match(rest)
        if done:
            step.status, step.seconds = "done", float(done.group(1))
        elif rest == "CACHED":
            step.status = "cached"
        elif rest.startswith("ERROR"):
            step.status, step.error = "failed", rest.removeprefix("ERROR:").strip()
        else:
            out = _OUTPUT.match(rest)
            step.tail.append(out.group(1) if out else rest)
        return step

    def fail(self, message: str) -> None:
        """The classic builder reports its error apart from the step that failed."""
        if self._classic_current in self.steps:
            step = self.steps[self._classic_current]
            step.status, step.error = "failed", message

    @property
    def failed(self) -> Step | None:
        return next((s for s in self.steps.values() if s.status == "failed"), None)

    @property
    def user_steps(self) -> list[Step]:
        return [s for s in self.steps.values() if not s.is_internal]
