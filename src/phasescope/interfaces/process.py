"""Whether this process is the ``phasescope`` command itself (derived, never stored).

It is when the interpreter's ``__main__`` is ``python -m phasescope`` (or ``-m phasescope.interfaces.cli``) or the console script
(whose ``main`` is :func:`phasescope.interfaces.cli.main`); an app invoked in-process (tests,
``CliRunner``, a notebook) is not. Nothing is set at run time: no module-level flag is rebound.
"""
from __future__ import annotations

import os
import sys

CLI_MODULES = ("phasescope.interfaces.cli", "phasescope.cli")  # the layered path and the old one; relayout: keep


def entry_point() -> bool:
    """True in the ``phasescope`` process itself (then a Ctrl-C stays ignored after an interrupt)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name in ("phasescope.__main__", "phasescope", *CLI_MODULES):  # python -m ...
        return True
    fn = getattr(main, "main", None)
    return callable(fn) and getattr(fn, "__module__", None) in CLI_MODULES


def busy_cpu_note(threads: int, load: float | None = None, cores: int | None = None) -> str | None:
    """A note when other jobs already keep the CPU busy (1-minute load average ``load``, by default
    ``os.getloadavg()``, at least ``cores - 0.5``) and torch would run ``threads`` > 1 threads: its
    threads then wait for each other's time slices, and one thread can be many times faster. None
    otherwise, or where the load average is unknown (Windows). The thread count is not changed
    here: it changes float reductions, hence results, so it stays the user's choice."""
    if threads <= 1:
        return None
    try:
        load = os.getloadavg()[0] if load is None else load
    except (OSError, AttributeError):
        return None
    cores = cores or os.cpu_count() or 1
    if load < cores - 0.5:
        return None
    return (f"the CPU is busy (load average {load:.1f} on {cores} cores) and torch will run {threads} threads, which "
            "then wait for each other: --threads 1 can be many times faster (results differ from a "
            f"{threads}-thread run in float rounding).")
