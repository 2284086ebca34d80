"""Whether this process is the ``phasescope`` command itself (derived, never stored).

It is when the interpreter's ``__main__`` is ``python -m phasescope`` (or ``-m phasescope.interfaces.cli``) or the console script
(whose ``main`` is :func:`phasescope.interfaces.cli.main`); an app invoked in-process (tests,
``CliRunner``, a notebook) is not. Nothing is set at run time: no module-level flag is rebound.
"""
from __future__ import annotations

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
