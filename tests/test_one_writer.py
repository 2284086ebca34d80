"""One writer of run folders (phasescope.run.runfolder.RunWriter, claiming with phasescope.outputs.runs.RunFolder) for `phasescope run`, the Lightning and
Hugging Face callbacks and `phasescope theory`: a folder holding another run is refused before
anything is written (every file left as it was), overwrite replaces only phasescope's files, a
writer holds the folder's lock while it writes and releases it at the end or on an error, and a
Trainer resuming from its checkpoint continues the callback's run in its folder."""
from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from phasescope import RunConfig, log_schedule, run_experiment
from phasescope.data import load_dataset
from phasescope.run.models import build_model
from phasescope.outputs.runs import RunFolder, RunFolderError, RunLockedError, locked_folder, read_json, writer_pid

RUN_KEYS = {"config", "data", "measurement", "model", "versions"}  # config.json of every run


def flat(text: str) -> str:
    """Console output with the terminal's line wrapping undone."""
    return " ".join(text.split())


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file of ``folder`` (recursively) with its bytes and modification time."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def run_folder(tmp_path) -> Path:
    """The files of a finished `phasescope run` (what a writer's claim reads: config.json with a
    ``config`` section, phases.json with a status, state.pt; and the extensions' files), made by
    hand: a real run takes 10-20 s on a busy CPU. Modification times are set in the past, so a
    rewrite shows even within the file system's time resolution."""
    out = tmp_path / "run"
    out.mkdir()
    cfg = RunConfig(dataset="digits", model="cnn", width=0.5, iterations=4)
    (out / "config.json").write_text(json.dumps({"config": cfg.to_dict(), "data": {"name": "digits"},
                                                 "measurement": {}, "model": {"name": "cnn"}, "versions": {}}))
    (out / "phases.json").write_text(json.dumps({"status": "complete", "checkpoints": [0, 1, 2, 4], "layers": {}}))
    (out / "metrics.csv").write_text("iteration,layer,split,metric,value,ci_low,ci_high\n0,model,test,accuracy,0.1,0,0.2\n")
    for name in ("state.pt", "state.prev.pt", "errors.npz", "samples.npz", "samples.png", "curves.png",
                 "report.html"):
        (out / name).write_bytes(f"the finished run's {name}".encode())
    for p in out.iterdir():
        os.utime(p, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    return out


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


# ---------------------------------------------------------------------- Lightning
@pytest.fixture(scope="module")
def pl():
    return pytest.importorskip("lightning.pytorch", reason="Lightning is not installed")


def lightning_fit(pl, digits, callbacks, *, steps=8, ckpt_path=None, fail_at=None, tmp_path=None, **trainer_kw):
    """A few SGD steps of a small CNN on 8x8 digits; ``fail_at``: training_step raises at that step."""

    class Digits(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = build_model("cnn", (1, 8, 8), 10, width=0.5)

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            if fail_at is not None and self.global_step == fail_at:
                raise RuntimeError("boom")
            x, y = batch
            return F.cross_entropy(self(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    pl.seed_everything(0, verbose=False)
    module = Digits()
    ds = torch.utils.data.TensorDataset(digits.x_train[:256], digits.y_train[:256])
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, callbacks=list(callbacks), max_steps=steps,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                         **{"enable_checkpointing": False, **trainer_kw})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, torch.utils.data.DataLoader(ds, batch_size=32), ckpt_path=ckpt_path)
    return trainer


def lightning_callback(digits, out, **kw):
    from phasescope.interfaces.integrations.lightning import PhaseScopeCallback

    return PhaseScopeCallback(layers=["net.features.3"], fit_data=(digits.x_train[:200], digits.y_train[:200]),
                              test_data=(digits.x_test[:100], digits.y_test[:100]), out=out, bootstrap=20, **kw)


def test_lightning_callback_refuses_a_finished_run_folder_before_training_and_changes_nothing(pl, digits, run_folder):
    before = snapshot(run_folder)
    steps = []

    class Steps(pl.Callback):
        def on_train_batch_start(self, trainer, *args):
            steps.append(trainer.global_step)

    with pytest.raises(RunFolderError, match=f"{re.escape(str(run_folder))} already exists and holds a finished run of "
                                             r"`phasescope run`\. Pass overwrite=True to replace it, or choose "
                                             "another out folder"):
        lightning_fit(pl, digits, [lightning_callback(digits, run_folder), Steps()])
    assert steps == []  # refused before the first step
    assert snapshot(run_folder) == before
    with locked_folder(run_folder):  # the refused callback holds no lock
        assert writer_pid(run_folder) is not None  # taken, by this process, now


def test_lightning_callback_with_overwrite_replaces_only_run_files(pl, digits, run_folder):
    (run_folder / "notes.txt").write_text("mine")
    before = snapshot(run_folder)
    with pytest.raises(RunFolderError, match=r"overwrite=True refused.*notes\.txt.*Nothing was deleted"):
        lightning_fit(pl, digits, [lightning_callback(digits, run_folder, overwrite=True)])
    assert snapshot(run_folder) == before
    (run_folder / "notes.txt").unlink()
    run_keys = set(read_json(run_folder / "config.json"))
    lightning_fit(pl, digits, [lightning_callback(digits, run_folder, overwrite=True)])
    names = set(os.listdir(run_folder))
    assert not names & {"state.pt", "state.prev.pt", "samples.npz", "samples.png"}  # the old run's files are gone
    assert {"config.json", "metrics.csv", "errors.npz", "phases.json", "curves.png", "report.html"} <= names
    doc = read_json(run_folder / "config.json")
    assert set(doc) == run_keys | {"integration"} and RUN_KEYS <= run_keys  # the schema of `phasescope run`
    assert doc["integration"] == {"source": "lightning", "max_steps": 8} and doc["data"]["num_classes"] == 10
    phases = read_json(run_folder / "phases.json")
    assert phases["status"] == "complete" and phases["checkpoints"] == log_schedule(8)


def test_lightning_callback_holds_the_lock_while_training_and_releases_it_on_an_error(pl, digits, tmp_path):
    out = tmp_path / "run"
    refused = []

    class SecondWriter(pl.Callback):
        def on_train_batch_start(self, trainer, *args):
            if trainer.global_step == 2:
                with pytest.raises(RunLockedError, match=f"{re.escape(str(out))} is in use by another phasescope process"):
                    RunFolder.claim(out, "x", overwrite=True)
                refused.append(trainer.global_step)

    with pytest.raises(RuntimeError, match="boom"):
        lightning_fit(pl, digits, [lightning_callback(digits, out), SecondWriter()], fail_at=5)
    assert refused == [2]
    assert read_json(out / "phases.json")["status"] == "failed"  # recorded on the way out
    with locked_folder(out):  # released
        assert writer_pid(out) is not None  # taken, by this process, now


def test_lightning_fit_resumed_from_its_checkpoint_continues_the_run_in_its_folder(pl, digits, tmp_path):
    out, ckpts = tmp_path / "run", tmp_path / "ckpt"
    save = pl.callbacks.ModelCheckpoint(dirpath=ckpts, every_n_train_steps=4, save_top_k=-1)
    whole = lightning_callback(digits, out)
    lightning_fit(pl, digits, [whole, save], tmp_path=tmp_path, enable_checkpointing=True)
    with pytest.raises(RunFolderError, match="holds a finished run. Pass ckpt_path=.* to continue that run, "
                                             "overwrite=True to replace it"):
        lightning_fit(pl, digits, [lightning_callback(digits, out)], tmp_path=tmp_path)
    first = sorted(ckpts.glob("*step=4*.ckpt"))
    assert first, sorted(ckpts.iterdir())
    resumed = lightning_callback(digits, out)
    lightning_fit(pl, digits, [resumed], tmp_path=tmp_path, ckpt_path=str(first[0]))
    assert all(resumed.tracker.timings[t] == whole.tracker.timings[t] for t in (0, 1, 2))  # from the checkpoint
    phases = read_json(out / "phases.json")
    assert phases["status"] == "complete" and phases["checkpoints"] == log_schedule(8)


# ---------------------------------------------------------------------- Hugging Face
@pytest.fixture(scope="module")
def hf():
    pytest.importorskip("transformers", reason="transformers is not installed")
    pytest.importorskip("accelerate", reason="the Trainer needs accelerate")
    import transformers

    return transformers


class PixelDataset(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"pixel_values": self.x[i], "labels": self.y[i]}


def hf_train(hf, digits, tmp_path, callbacks, *, steps=8, resume=None, **args):
    torch.manual_seed(0)
    model = hf.ViTForImageClassification(hf.ViTConfig(
        image_size=8, patch_size=4, num_channels=1, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, num_labels=10))
    targs = hf.TrainingArguments(output_dir=str(tmp_path / "hf"), max_steps=steps, per_device_train_batch_size=32,
                                 learning_rate=1e-3, use_cpu=True, disable_tqdm=True, seed=0,
                                 **{"report_to": [], "save_strategy": "no", **args})
    trainer = hf.Trainer(model=model, args=targs, callbacks=list(callbacks),
                         train_dataset=PixelDataset(digits.x_train[:256], digits.y_train[:256]))
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def hf_callback(digits, out, **kw):
    from phasescope.interfaces.integrations.transformers import PhaseScopeCallback

    return PhaseScopeCallback(layers=["vit.layers.0"], fit_data=(digits.x_train[:200], digits.y_train[:200]),
                              test_data=(digits.x_test[:100], digits.y_test[:100]), out=out, bootstrap=20, **kw)


def test_hf_callback_refuses_a_finished_run_folder_and_overwrites_only_run_files(hf, digits, run_folder, tmp_path):
    before = snapshot(run_folder)
    with pytest.raises(RunFolderError, match=f"{re.escape(str(run_folder))} already exists and holds a finished run of "
                                             r"`phasescope run`\. Pass overwrite=True to replace it"):
        hf_train(hf, digits, tmp_path, [hf_callback(digits, run_folder)])
    assert snapshot(run_folder) == before
    cb = hf_callback(digits, run_folder, overwrite=True)
    hf_train(hf, digits, tmp_path, [cb])
    names = set(os.listdir(run_folder))
    assert not names & {"state.pt", "state.prev.pt", "samples.npz"}
    doc = read_json(run_folder / "config.json")
    assert RUN_KEYS <= set(doc) and doc["integration"]["source"] == "transformers"
    assert read_json(run_folder / "phases.json")["checkpoints"] == log_schedule(8)
    assert not cb.run.held
    with locked_folder(run_folder):  # released: another writer can take the lock
        assert writer_pid(run_folder) is not None  # taken, by this process, now


def test_hf_callback_holds_the_lock_and_resumes_into_its_folder(hf, digits, tmp_path):
    out = tmp_path / "run"
    refused = []

    class SecondWriter(hf.TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 2:
                with pytest.raises(RunLockedError, match="in use by another phasescope process"):
                    RunFolder.claim(out, "x", overwrite=True)
                refused.append(state.global_step)

    first = hf_callback(digits, out)
    hf_train(hf, digits, tmp_path, [first, SecondWriter()], save_strategy="steps", save_steps=4)
    assert refused == [2]
    with pytest.raises(RunFolderError, match="holds a finished run. Pass resume_from_checkpoint="):
        hf_train(hf, digits, tmp_path, [hf_callback(digits, out)])
    again = hf_callback(digits, out)
    hf_train(hf, digits, tmp_path, [again], resume=str(tmp_path / "hf" / "checkpoint-4"))
    assert all(again.tracker.timings[t] == first.tracker.timings[t] for t in (0, 1, 2, 4))  # not re-measured
    assert read_json(out / "phases.json")["checkpoints"] == log_schedule(8)


# ---------------------------------------------------------------------- theory and run
def test_theory_into_a_held_or_occupied_folder_is_refused(run_folder, tmp_path):
    from typer.testing import CliRunner

    from phasescope.theory.cli import app

    args = ["-K", "3", "-d", "10", "-n", "60", "--n-test", "30", "-T", "8", "--bootstrap", "20", "--no-figure"]
    held = tmp_path / "held"
    with RunFolder.claim(held, "x"):
        res = CliRunner().invoke(app, args + ["--out", str(held)])
        assert res.exit_code == 2 and "in use by another phasescope process" in flat(res.output), res.output
        res = CliRunner().invoke(app, args + ["--sweep", "noise=1,2", "--seeds", "0", "--out", str(held)])
        assert res.exit_code == 2 and "in use by another phasescope process" in flat(res.output), res.output
    assert os.listdir(held) == [".lock"]  # nothing written
    before = snapshot(run_folder)
    res = CliRunner().invoke(app, args + ["--out", str(run_folder)])
    assert res.exit_code == 2 and "holds a finished run of `phasescope run`. Pass --overwrite" in flat(res.output), \
        res.output
    assert snapshot(run_folder) == before
    res = CliRunner().invoke(app, args + ["--sweep", "noise=1,2", "--seeds", "0", "--out", str(held)])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, args + ["--sweep", "noise=1,3", "--seeds", "0", "--out", str(held), "--overwrite"])
    assert res.exit_code == 0 and json.loads((held / "config.json").read_text())["values"] == [1.0, 3.0]


def test_phasescope_run_does_not_restart_a_callbacks_or_a_theorys_folder(tmp_path, tiny_cfg):
    """A callback's run has no state.pt and a theory run no status: neither is a `phasescope run`
    killed before its first checkpoint, which a new run may start again without --overwrite."""
    from phasescope.theory import DataModel, Training
    from phasescope.theory.experiment import run_theory

    callback_run = tmp_path / "callback"
    callback_run.mkdir()
    (callback_run / "config.json").write_text(json.dumps({"config": {}, "integration": {"source": "lightning"}}))
    (callback_run / "metrics.csv").write_text("iteration,layer,split,metric,value,ci_low,ci_high\n")
    theory_run = run_theory(DataModel(num_classes=3, dim=10, n_train=60, n_test=30), Training(iterations=8),
                            out=tmp_path / "theory", bootstrap=20, figure=False).out
    for folder, who in ((callback_run, "the lightning callback"), (theory_run, "`phasescope theory`")):
        before = snapshot(folder)
        with pytest.raises(RunFolderError, match=f"holds a run of {who}. Pass --overwrite to replace it"):
            run_experiment(tiny_cfg, folder, progress=False)
        assert snapshot(folder) == before


def test_the_writer_as_a_context_manager_records_a_failure_and_releases_the_lock(tmp_path, digits):
    from phasescope import PhaseTracker
    from phasescope.run.runfolder import RunWriter, config_document

    model = build_model("cnn", (1, 8, 8), 10, width=0.5)
    tracker = PhaseTracker(model, ["features.3"], (digits.x_train[:100], digits.y_train[:100]),
                           (digits.x_test[:50], digits.y_test[:50]), schedule=[0, 1], bootstrap=20)
    with pytest.raises(RuntimeError, match="boom"):
        with RunWriter.claim(tmp_path / "run", "x") as run:
            run.start(config_document({"model": "cnn"}, data={}, measurement=tracker.describe(), model={}))
            tracker.maybe_measure(model, 0)
            run.checkpoint(tracker)
            raise RuntimeError("boom")
    assert not run.held and read_json(tmp_path / "run" / "phases.json")["status"] == "failed"
    assert set(read_json(tmp_path / "run" / "config.json")) == RUN_KEYS
    with pytest.raises(RunFolderError, match="not claimed by this writer"):
        run.checkpoint(tracker)


def test_the_callbacks_old_writer_is_a_deprecated_name_of_the_one_writer():
    import phasescope.interfaces.integrations as integrations

    from phasescope.run.runfolder import RunWriter

    with pytest.warns(DeprecationWarning, match="phasescope.run.runfolder.RunWriter"):
        assert integrations.RunFolder is RunWriter
