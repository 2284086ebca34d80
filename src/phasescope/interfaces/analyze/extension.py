"""The ``analyze`` part of a run folder, for the code that reads any run folder.

It measures nothing: :func:`phasescope.interfaces.analyze.analyze` writes phases.json's ``analyze``
section (where the checkpoints came from, which were measured, skipped or failed, the
guard's findings). Registered among the extensions so that the printed summary lists it and
``phasescope report``, which recomputes ``warnings`` from the metrics, keeps the guard's
warnings in them.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...extension import Extension


def _steps(steps: list[int]) -> str:
    if not steps:
        return "none"
    return ", ".join(map(str, steps)) if len(steps) <= 8 else f"{steps[0]}, {steps[1]}, ... {steps[-1]} ({len(steps)})"


class CheckpointAnalysis(Extension):
    name = "analyze"
    files = ("analyze.pt", "analyze.journal")

    def __init__(self, summary: dict | None = None):
        self.summary = summary  # set by the analysis before the run folder's end is written

    def summarise(self, df: pd.DataFrame, payload: dict) -> dict:
        """Hook of write_outputs: the ``analyze`` section, and the guard's lines added to ``warnings``."""
        if self.summary is None:
            return {}
        warnings = list(payload.get("warnings") or [])
        return {"analyze": self.summary,
                "warnings": warnings + [w for w in self.summary.get("warnings") or [] if w not in warnings]}

    @classmethod
    def summary_lines(cls, payload: dict) -> list[str]:
        a = payload.get("analyze")
        if not isinstance(a, dict):
            return []
        measured, now = a.get("measured") or [], a.get("measured_now") or []
        lines = [f"checkpoints of {a.get('source')}: {len(measured)} measured (steps {_steps(measured)}); "
                 f"{len(now)} in this call, {len(measured) - len(now)} earlier"]
        skipped = a.get("skipped_entries") or []
        if skipped:
            lines.append(f"not checkpoints ({len(skipped)}): "
                         + "; ".join(f"{s['name']}: {s['reason']}" for s in skipped[:3])
                         + (" ..." if len(skipped) > 3 else ""))
        findings = a.get("findings") or []
        kinds = sorted({f["kind"] for f in findings})
        lines.append("integrity guard: " + (f"{len(findings)} finding(s) ({', '.join(kinds)}; see the warnings)"
                                            if findings else "no findings"))
        return lines

    @classmethod
    def rebuild(cls, run_dir: Path, df: pd.DataFrame, payload: dict) -> dict:
        a = payload.get("analyze")
        if not isinstance(a, dict):
            return {}
        warnings = list(payload.get("warnings") or [])
        return {"warnings": warnings + [w for w in a.get("warnings") or [] if w not in warnings]}
