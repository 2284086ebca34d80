"""The live view: a progress bar with done/running/failed counts in a terminal, one plain line
per checkpoint otherwise."""
import io

from rich.console import Console
from typer.testing import CliRunner

from phasescope.interfaces.analyze import analyze
from phasescope.interfaces.cli import app

from .helpers import TINY_ARGS, save_steps, tiny_cfg

runner = CliRunner()


def test_plain_lines_when_not_a_terminal(tmp_path):
    ckpts = save_steps(tmp_path / "c", [0, 1])
    (ckpts / "step-2.pt").write_bytes(b"garbage")  # named by the guard, not a job
    args = [a for a in TINY_ARGS if a != "--quiet"]
    res = runner.invoke(app, ["analyze", str(ckpts), *args, "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "[1/2] step 0 (step-0.pt): measured" in res.output
    assert "[2/2] step 1 (step-1.pt): measured" in res.output and "(2 done, 0 running, 0 failed)" in res.output


def test_progress_bar_in_a_terminal(tmp_path):
    ckpts = save_steps(tmp_path / "c", [0, 1, 2])
    buf = io.StringIO()
    analyze(ckpts, tiny_cfg(), tmp_path / "out", console=Console(file=buf, force_terminal=True, width=120))
    text = buf.getvalue()
    assert "checkpoints" in text and "3/3" in text and "3 done, 0 running, 0 failed, 0 waiting" in text
