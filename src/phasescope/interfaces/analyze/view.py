"""Live display of an analysis: checkpoints done, running, failed and waiting.

In a terminal a rich progress bar (with the counts) that redraws itself; otherwise (a log
file, CI) one plain line per finished checkpoint. "Running" is what the backend has in flight
and resources for: one for the local backend; for Ray, the tasks submitted up to the slots the
cluster has for them (Ray does not say which queued task has started).
"""
from __future__ import annotations

import sys
import time


class AnalyzeView:
    def __init__(self, total: int, *, enabled: bool = True, console=None, slots: int = 1):
        self.total, self.enabled, self.console, self.slots = total, enabled, console, max(1, slots)
        self.done_n = self.failed_n = 0
        self.t0 = time.perf_counter()
        self.tty = enabled and (console.is_terminal if console is not None else sys.stdout.isatty())
        self.bar = None
        self.task = None

    def counts(self) -> dict[str, int]:
        left = self.total - self.done_n - self.failed_n
        running = min(left, self.slots)
        return {"done": self.done_n, "running": running, "failed": self.failed_n, "waiting": left - running}

    def _fields(self) -> dict:
        c = self.counts()
        return {"counts": f"{c['done']} done, {c['running']} running, {c['failed']} failed, {c['waiting']} waiting"}

    def __enter__(self) -> "AnalyzeView":
        if self.tty and self.total:
            from rich.progress import (  # lazy: only on a terminal
                BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn)

            self.bar = Progress(TextColumn("[bold]checkpoints"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[counts]}"), TimeElapsedColumn(), console=self.console,
                                transient=False)
            self.bar.__enter__()
            self.task = self.bar.add_task("checkpoints", total=self.total, **self._fields())
        return self

    def __exit__(self, *exc) -> bool:
        if self.bar is not None:
            self.bar.__exit__(*exc)
            self.bar = None
        return False

    def done(self, outcome: dict) -> None:
        ok = outcome["status"] == "measured"
        if ok:
            self.done_n += 1
        else:
            self.failed_n += 1
        if not self.enabled:
            return
        secs = sum((outcome.get("seconds") or {}).values())
        line = (f"[{self.done_n + self.failed_n}/{self.total}] step {outcome['step']} ({outcome['name']}): "
                + (f"measured ({secs:.1f} s)" if ok else f"failed - {outcome.get('message', '')}"))
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done_n + self.failed_n, **self._fields())
            if not ok:
                self.bar.console.print(line)
        else:
            c = self.counts()
            print(f"{line}   ({c['done']} done, {c['running']} running, {c['failed']} failed)", flush=True)
