"""Live view of a sweep: runs done / running / failed / pending, and each running run's iteration,
read from the status files the runs write (works alike for the local and the Ray backend)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from rich.live import Live
from rich.table import Table

from .backends import read_status, status_path


class SweepView:
    def __init__(self, names: list[str], out: Path, session: str, *, enabled: bool = True, console=None):
        self.names, self.out, self.session = names, Path(out), session
        self.outcomes: dict[str, dict] = {}
        self.enabled = enabled
        self.console = console
        self.live = None
        self.t0 = time.perf_counter()
        self.tty = enabled and (console.is_terminal if console is not None else sys.stdout.isatty())

    # -- what is going on
    def running(self) -> list[dict]:
        out = []
        for name in self.names:
            if name in self.outcomes:
                continue
            doc = read_status(status_path(self.out, name))
            if doc and doc.get("session") == self.session and doc.get("status") == "running":
                out.append(doc)
        return out

    def counts(self) -> dict[str, int]:
        done = sum(1 for o in self.outcomes.values() if o["status"] in ("complete", "stopped"))
        failed = sum(1 for o in self.outcomes.values() if o["status"] not in ("complete", "stopped", "interrupted"))
        running = len(self.running()) if self.enabled else 0
        return {"done": done, "failed": failed, "running": running,
                "pending": len(self.names) - len(self.outcomes) - running}

    def render(self):
        c = self.counts()
        t = Table(title=f"sweep {self.out}: {c['done']} done, {c['running']} running, {c['failed']} failed, "
                        f"{c['pending']} waiting ({len(self.names)} runs, {time.perf_counter() - self.t0:.0f} s)",
                  title_justify="left")
        for col in ("running run", "iteration", "loss", "attempt", "pid"):
            t.add_column(col)
        for d in self.running():
            loss = d.get("loss")
            t.add_row(d["name"], f"{d.get('iteration', 0)}/{d.get('iterations', '?')}",
                      f"{loss:.3f}" if isinstance(loss, (int, float)) else "-", str(d.get("attempt", 1)),
                      str(d.get("pid", "")))
        return t

    # -- events
    def __enter__(self) -> "SweepView":
        if self.tty:
            self.live = Live(get_renderable=self.render, console=self.console, refresh_per_second=2, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> bool:
        if self.live is not None:
            self.live.__exit__(*exc)
            self.live = None
        return False

    def done(self, outcome: dict) -> None:
        self.outcomes[outcome["name"]] = outcome
        if not self.enabled:
            return
        c = self.counts()
        what = "already finished" if outcome.get("skipped") else outcome["status"]
        secs = outcome.get("seconds")
        line = (f"[{len(self.outcomes)}/{len(self.names)}] {outcome['name']}: {what}"
                + (f" ({secs:.0f} s)" if isinstance(secs, (int, float)) and not outcome.get("skipped") else "")
                + (f" - {outcome['message']}" if outcome.get("message") and outcome["status"] not in
                   ("complete", "stopped") else ""))
        if self.live is not None:
            self.live.console.print(line)
        else:
            print(line + f"   ({c['done']} done, {c['failed']} failed)", flush=True)

    def tick(self) -> None:
        pass  # the live display refreshes itself
