"""Sampling profiles of every process of the stack while the benchmark loads it (`python -m bench --profile DIR`).

One `py-spy record` per process (raw collapsed stacks, only samples of a thread holding the GIL: a
process's Python and C-extension work, not its waits in the event loop's poll), started before the loaded
phase and stopped with SIGINT after it, so each profile covers exactly the phase the figures describe.
`summary` turns each file into the frames that cost the most of that process's samples: by self time
(the innermost frame) and by inclusive time (every frame on a stack, counted once per stack).
"""

from __future__ import annotations

import collections
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from sagaline import stack


class Profiles:
    """py-spy recorders attached to the live children of a supervisor."""

    def __init__(self, supervisor: stack.Supervisor, directory: Path, rate: int = 250) -> None:
        """Nothing runs until `start`; `directory` receives one `<process>.txt` per process."""
        self._supervisor, self._directory, self._rate = supervisor, directory, rate
        self._recorders: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
        if spy is None:
            raise SystemExit("py-spy is missing: `uv sync` installs it with the dev dependencies")
        self._directory.mkdir(parents=True, exist_ok=True)
        for name, child in self._supervisor.children.items():
            if child.process is None or child.process.returncode is not None:
                continue
            output = self._directory / f"{name}.txt"
            command = [spy, "record", "--pid", str(child.process.pid), "--format", "raw", "--rate", str(self._rate),
                       "--nonblocking", "--gil", "--output", str(output)]  # fmt: skip
            self._recorders[name] = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> dict[str, str]:
        """Stop every recorder and summarise what it wrote."""
        for recorder in self._recorders.values():
            recorder.send_signal(signal.SIGINT)
        summaries = {}
        for name, recorder in self._recorders.items():
            recorder.wait(timeout=60)
            path = self._directory / f"{name}.txt"
            if path.exists():
                summaries[name] = summary(path)
                (self._directory / f"{name}.summary.txt").write_text(summaries[name])
        return summaries


def _frame(entry: str) -> str:
    """`function (path:line)` without the line number and the leading site-packages path."""
    function, _, where = entry.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/src/", "/lib/python3.11/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{function} ({where})"


def summary(path: Path, top: int = 25) -> str:
    """The costliest frames of one raw py-spy profile, in percent of its samples."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not stack_text or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack_text.split(";") if f]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if total == 0:
        return "no samples\n"
    lines = [f"{total} samples", "self %:"]
    lines += [f"  {n / total * 100:5.1f}  {frame}" for frame, n in own.most_common(top)]
    lines.append("inclusive %:")
    lines += [f"  {n / total * 100:5.1f}  {frame}" for frame, n in inclusive.most_common(top)]
    return "\n".join(lines) + "\n"
