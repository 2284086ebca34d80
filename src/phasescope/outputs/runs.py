"""The run folder: what a run writes, how it is written, and how it is read back.

    config.json      resolved configuration + data, measurement settings, versions
    metrics.csv      tidy: iteration, layer, split, metric, value, ci_low, ci_high
                     (+ metrics.parquet when pyarrow is installed)
    errors.npz       per-sample test reconstruction errors, (K, n_test) per layer
    phases.json      per layer: phases, minimum, relative decrease/increase with intervals;
                     the run's ``status``. Written when the run ends (complete, stopped,
                     interrupted, diverged, failed), like the extensions' tables and the
                     figures; metrics.csv, errors.npz and state.pt after every checkpoint
    curves.png       the figure
    checkpoints/     with --save-checkpoints: the weights at every checkpoint, step-N.pt
    analyze.pt       `phasescope analyze`: each checkpoint's measurement (for re-runs that add checkpoints)
    analyze.journal  `phasescope analyze`: checkpoints measured since analyze.pt was written (while it runs)
    state.pt         training + tracker state at the last checkpoint (for --resume)
    state.prev.pt    the state of the checkpoint before (used when state.pt is unusable)
    .lock            held (flock) by the process writing the folder

Every run folder (``phasescope run`` and the runs of sweeps and ``--seeds``, the Lightning and
Hugging Face callbacks, ``phasescope theory``) is claimed by :meth:`RunFolder.claim` and written
by one writer, :class:`phasescope.run.runfolder.RunWriter` (a :class:`RunFolder` that also writes
config.json, the checkpoints and the end's summaries; it lives above the report and figure
modules that the summaries need).

Safety rules, all implemented here and used by every writer (extensions included):

- Every file is written atomically by :func:`atomic_write`: a temporary file with a unique
  name in the same folder, flushed and fsynced, then ``os.replace``\\ d over the target and
  the folder fsynced. A killed process leaves the previous complete file (and at worst a
  hidden ``.NAME.PID.XXXXXXXX.tmp``, removed by the next run in the folder).
- :class:`RunFolder` takes an exclusive ``flock`` on ``.lock`` for the whole run, so two
  processes never write one folder; the lock dies with its process (no stale locks).
- ``--overwrite`` deletes only the files phasescope writes (:func:`run_files`) and refuses,
  deleting nothing, when the folder holds anything else.
- Readers (:func:`read_metrics`, :func:`read_json`, :func:`read_errors`) validate what they
  read and raise :class:`RunFileError` naming the file when it is corrupt or truncated.
"""
from __future__ import annotations

import errno
import json
import os
import re
import secrets
import signal
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from ..config import ConfigError
from ..registry import extension_files


class RunFolderError(FileExistsError):
    """The run folder cannot be used as asked (exists, locked, not writable, nothing to resume)."""


class RunLockedError(RunFolderError):
    """Another process is writing to the run folder; ``pid``: that process ('' when unknown)."""

    pid: str = ""


class RunWriteError(OSError):
    """A file of a run folder could not be written: the disk is full (``errno.ENOSPC``), a quota is
    exceeded, the folder became unwritable, an I/O error. ``path`` is the file; the file it
    would have replaced, and every other file, are untouched (see :func:`atomic_write`)."""

    def __init__(self, path: Path | str, errno_: int, strerror: str):
        super().__init__(errno_, strerror, str(path))
        self.path = Path(path)


class RunFileError(ValueError):
    """A file of a run folder is missing, corrupt or truncated; the message names it."""

    def __init__(self, path: Path | str, problem: str):
        self.path = Path(path)
        super().__init__(f"{path}: {problem}")


class ResumeMismatch(ConfigError):
    """Options given to --resume differ from the saved configuration."""

    def __init__(self, out: Path, differences: list[tuple[str, Any, Any]]):
        self.differences = differences
        lines = "\n".join(f"  {name}: saved {saved!r}, given {given!r}" for name, saved, given in differences)
        super().__init__(
            f"Cannot resume {out} with different options:\n{lines}\n"
            "A resumed run is the same run: drop these options (the saved ones are used), or start a new run "
            "with another --out (or --overwrite)."
        )


# ---------------------------------------------------------------------- which files are phasescope's
CORE_FILES = frozenset({
    "config.json", "metrics.csv", "metrics.parquet", "errors.npz", "phases.json", "curves.png",
    "state.pt", "state.prev.pt", ".lock", "report.html", "index.html", "atypical.npz",  # --atypical
    # a multi-seed folder (--seeds): its summary files; its seed-N sub-folders are run folders
    "seeds.csv", "agreement.csv", "aggregate.csv", "seeds.png",
    "sweep.csv", "sweep.png",  # phasescope theory --sweep
    "analyze.pt",  # `phasescope analyze`: the measurements of each checkpoint so far
    "analyze.journal",  # `phasescope analyze`: those appended since analyze.pt was written (folded in at the end)
})


def run_files() -> frozenset[str]:
    """Every file phasescope writes in a run folder: :data:`CORE_FILES` and every registered
    extension's ``files`` (built-in and installed), so ``--overwrite`` knows a plug-in's files."""
    return CORE_FILES | frozenset(extension_files())


def __getattr__(name: str) -> Any:
    if name == "RUN_FILES":  # computed: the registry's extensions are loaded on first use
        return run_files()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


CHECKPOINTS = "checkpoints"  # --save-checkpoints: the weights at every checkpoint, as step-N.pt files
_CHECKPOINT_FILE = re.compile(r"^step-\d+\.pt$")
_TMP = re.compile(r"^\..+\.\d+\.[0-9a-f]{8}\.tmp$")  # atomic_write's temporary files
_SEED_DIR = re.compile(r"^seed-\d+$")
STATE, PREV_STATE, LOCK = "state.pt", "state.prev.pt", ".lock"


def is_temporary(name: str) -> bool:
    """A temporary file of :func:`atomic_write` (or of older versions: ``NAME.tmp``)."""
    return bool(_TMP.match(name)) or (name.endswith(".tmp") and name[:-4] in run_files())


def foreign_entries(folder: Path) -> list[str]:
    """Entries of ``folder`` (recursively into seed-N sub-folders) that phasescope does not write."""
    out = []
    for p in sorted(Path(folder).iterdir()):
        if p.is_dir() and not p.is_symlink():
            if _SEED_DIR.match(p.name):
                out += [f"{p.name}/{n}" for n in foreign_entries(p)]
            elif p.name == CHECKPOINTS:
                out += [f"{p.name}/{q.name}" for q in sorted(p.iterdir())
                        if not (q.is_file() and (_CHECKPOINT_FILE.match(q.name) or _TMP.match(q.name)))]
            else:
                out.append(p.name + "/")
        elif not (p.name in run_files() or is_temporary(p.name)):
            out.append(p.name)
    return out


def _entries(folder: Path) -> list[Path]:
    """What the folder holds, besides the lock file and temporary files."""
    return [p for p in Path(folder).iterdir() if p.name != LOCK and not is_temporary(p.name)]


def remove_temporary(folder: Path) -> list[str]:
    """Delete temporary files left by killed writers (call only while holding the folder's lock)."""
    removed = []
    for p in Path(folder).iterdir():
        if p.is_file() and is_temporary(p.name):
            p.unlink(missing_ok=True)
            removed.append(p.name)
    return removed


# ---------------------------------------------------------------------- atomic writes
def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path | str, write: Callable[[Path], Any], *, previous: Path | str | None = None) -> Path:
    """Write ``path`` so that readers (and a later process, after any crash) see either the old
    complete file or the new complete file, never a torn one.

    ``write(tmp)`` writes the content to ``tmp``, a uniquely named temporary file in the same
    folder (so the final rename never crosses file systems and concurrent writers do not share
    it); it is then fsynced and renamed over ``path``, and the folder is fsynced. With
    ``previous``, an existing ``path`` is first renamed to ``previous`` (one older version kept).
    On any exception (Ctrl-C included) the temporary file is removed and ``path`` is untouched;
    a failure to write (an OSError such as a full disk, or torch's write error) is raised as
    :class:`RunWriteError` naming ``path``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if previous is not None and path.exists():
            os.replace(path, previous)
        os.replace(tmp, path)
    except BaseException as e:
        failure = _write_failure(path, tmp, e)  # before the unlink: a full disk is still full
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        if failure is not None:
            raise failure from e
        raise
    _fsync_dir(path.parent)
    return path


_TORCH_WRITE = re.compile(r"inline_container|PytorchStreamWriter|file write failed")


def _write_failure(path: Path, tmp: Path, e: BaseException) -> RunWriteError | None:
    """The :class:`RunWriteError` that ``e``, raised while writing ``path``, stands for: an OSError
    (or one in its chain: torch.save to a file handle raises a RuntimeError whose context is the
    OSError), or torch's own RuntimeError when it writes to a path (``enforce fail at
    inline_container.cc``), which carries no errno: a disk with no space left then means ENOSPC."""
    if isinstance(e, RunWriteError):
        return None
    if isinstance(e, OSError):
        return RunWriteError(path, e.errno if e.errno is not None else errno.EIO, e.strerror or str(e))
    if isinstance(e, RuntimeError) and _TORCH_WRITE.search(str(e)):
        seen, cause = set(), e
        while cause is not None and id(cause) not in seen:
            if isinstance(cause, OSError) and cause.errno is not None:
                return RunWriteError(path, cause.errno, cause.strerror or str(cause))
            seen.add(id(cause))
            cause = cause.__cause__ or cause.__context__
        try:
            st = os.statvfs(tmp.parent)
            full = st.f_bavail == 0 or st.f_favail == 0
        except (OSError, AttributeError):  # AttributeError: no statvfs (Windows)
            full = False
        if full:
            return RunWriteError(path, errno.ENOSPC, os.strerror(errno.ENOSPC))
        return RunWriteError(path, errno.EIO, f"the file could not be written ({str(e).splitlines()[0]})")
    return None


def write_bytes_to(write: Callable[[Any], Any]) -> Callable[[Path], None]:
    """Adapter for writers that take an open binary file (np.savez, torch.save to a handle)."""
    def _w(p: Path) -> None:
        with open(p, "wb") as f:
            write(f)
    return _w


PNG_COMPRESS_LEVEL = 1  # zlib level of PNG figures: about 2x faster to encode than the default 6, larger files


def save_figure(fig, path: Path | str, **kwargs) -> Path:
    """``fig.savefig`` through :func:`atomic_write` (the format comes from ``path``'s suffix)."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    if fmt == "png":
        kwargs.setdefault("pil_kwargs", {"compress_level": PNG_COMPRESS_LEVEL})
    return atomic_write(path, lambda p: fig.savefig(p, format=fmt, **kwargs))


def write_json(path: Path, obj: Any) -> None:
    text = json.dumps(obj, indent=2, default=_json_default) + "\n"
    atomic_write(Path(path), lambda p: p.write_text(text))


def _json_default(o: Any):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return None if not np.isfinite(o) else float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"Not JSON serialisable: {type(o)}")


def read_json(path: Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunFileError(path, f"not valid JSON ({e}); the file is corrupt or truncated. "
                                 "Rebuild phases.json with `phasescope report`, or re-run.") from e


# ---------------------------------------------------------------------- metrics
METRIC_COLUMNS = ("iteration", "layer", "split", "metric", "value", "ci_low", "ci_high")


def write_metrics(out: Path, df: pd.DataFrame) -> None:
    atomic_write(out / "metrics.csv", lambda p: df.to_csv(p, index=False, float_format="%.6g"))
    try:
        import pyarrow  # noqa: F401  # lazy: optional dependency (pyarrow): metrics.parquet only when it is installed
    except ImportError:
        return
    atomic_write(out / "metrics.parquet", lambda p: df.to_parquet(p, index=False))


def read_metrics(run_dir: Path) -> pd.DataFrame:
    """metrics.csv of a run, validated: columns, types, a complete last line, and a full last
    checkpoint (as many rows as the checkpoints before it). Raises :class:`RunFileError`."""
    path = Path(run_dir) / "metrics.csv"
    fix = (f" While state.pt is there, `phasescope run --out {run_dir} --resume` rewrites it from the saved state "
           "(the run's options are read from config.json).")
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: is {run_dir} a phasescope run folder?")
    raw = path.read_bytes()
    if not raw.strip():
        raise RunFileError(path, "the file is empty; the run wrote no checkpoint, or the file was truncated." + fix)
    if b"\0" in raw[:65536]:
        raise RunFileError(path, "the file is binary, not CSV; it is corrupt." + fix)
    if not raw.endswith(b"\n"):
        raise RunFileError(path, "the last line is incomplete: the file is truncated." + fix)
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        raise RunFileError(path, f"cannot be parsed as CSV ({e}); it is corrupt." + fix) from e
    missing = [c for c in METRIC_COLUMNS if c not in df.columns]
    if missing:
        raise RunFileError(path, f"columns {missing} are missing (found {list(df.columns)}); it is not a "
                                 "phasescope metrics file, or it is corrupt.")
    if df.empty:
        raise RunFileError(path, "the file has a header but no rows; it is truncated." + fix)
    for col in ("iteration", "value", "ci_low", "ci_high"):
        if not pd.api.types.is_numeric_dtype(df[col]):
            raise RunFileError(path, f"column {col!r} is not numeric; the file is corrupt.")
    if df.iteration.isna().any() or not np.all(np.mod(df.iteration.to_numpy(dtype=np.float64), 1) == 0):
        raise RunFileError(path, "column 'iteration' holds non-integers or blanks; the file is corrupt.")
    df["iteration"] = df.iteration.astype(np.int64)
    counts = df.groupby("iteration").size()
    if len(counts) >= 2 and counts.iloc[-1] < counts.iloc[:-1].median():
        raise RunFileError(path, f"the last checkpoint (iteration {counts.index[-1]}) has {counts.iloc[-1]} rows "
                                 f"where the others have {int(counts.iloc[:-1].median())}: the file is truncated." + fix)
    return df


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """A compressed .npz, written atomically."""
    atomic_write(Path(path), write_bytes_to(lambda f: np.savez_compressed(f, **arrays)))


# ---------------------------------------------------------------------- per-sample errors
def by_iteration(per_it: dict[int, np.ndarray], prefix: str, name: str, dtype=np.float64) -> dict[str, np.ndarray]:
    """``{iteration: (n,) values}`` as the npz entries ``PREFIX::iterations`` (sorted) and
    ``PREFIX::NAME`` (checkpoints x n), the layout of every per-sample file of a run."""
    its = sorted(per_it)
    if not its:
        return {}
    return {f"{prefix}::iterations": np.asarray(its),
            f"{prefix}::{name}": np.stack([per_it[i] for i in its]).astype(dtype)}


def write_errors(out: Path, errors: dict[str, dict[int, np.ndarray]]) -> None:
    arrays = {}
    for layer, per_it in errors.items():
        arrays.update(by_iteration(per_it, layer, "errors"))
    # uncompressed: rewritten at every checkpoint, and float errors barely compress
    atomic_write(out / "errors.npz", write_bytes_to(lambda f: np.savez(f, **arrays)))


def read_errors(run_dir: Path) -> dict[str, tuple[list[int], np.ndarray]]:
    path = Path(run_dir) / "errors.npz"
    if not path.exists():
        return {}
    try:
        with np.load(path) as z:
            layers = sorted({k.split("::")[0] for k in z.files})
            out = {n: (z[f"{n}::iterations"].tolist(), z[f"{n}::errors"].astype(np.float64)) for n in layers}
    except Exception as e:  # zipfile.BadZipFile, EOFError, KeyError, ValueError, zlib.error, ...
        raise RunFileError(path, f"cannot be read ({type(e).__name__}: {e}); the file is corrupt or truncated.") from e
    for n, (its, E) in out.items():
        if E.ndim != 2 or E.shape[0] != len(its):
            raise RunFileError(path, f"layer {n!r}: {len(its)} iterations but errors of shape {E.shape}; "
                                     "the file is corrupt.")
    return out


# ---------------------------------------------------------------------- training state
STATE_KEYS = ("iteration", "model", "optimizer", "stream", "tracker", "rng")


def save_state(out: Path, state: dict) -> None:
    """state.pt, keeping the one it replaces as state.prev.pt."""
    # through a Python file handle: a full disk then surfaces as OSError(ENOSPC), not only as torch's
    # "enforce fail at inline_container.cc" (see _write_failure)
    atomic_write(Path(out) / STATE, write_bytes_to(lambda f: torch.save(state, f)), previous=Path(out) / PREV_STATE)


def _read_state(path: Path) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or any(k not in state for k in STATE_KEYS):
        raise ValueError(f"not a phasescope training state (keys {sorted(state) if isinstance(state, dict) else type(state).__name__})")
    return state


def load_state(run_dir: Path, *, repair: bool = False) -> tuple[dict, str | None]:
    """The latest usable training state and a note when it is not the latest saved one.

    Tries state.pt, then state.prev.pt (the checkpoint before). With ``repair`` (only while
    holding the folder's lock), a usable state.prev.pt replaces an unusable state.pt, so the
    next checkpoint keeps it as the previous state."""
    run_dir = Path(run_dir)
    problems = []
    for name in (STATE, PREV_STATE):
        path = run_dir / name
        if not path.exists():
            problems.append(f"{name} does not exist")
            continue
        try:
            state = _read_state(path)
        except Exception as e:  # truncated, foreign or unreadable
            problems.append(f"{name} is unusable ({type(e).__name__}: {e})")
            continue
        if name == STATE:
            return state, None
        if repair:
            os.replace(path, run_dir / STATE)
            _fsync_dir(run_dir)
        return state, (f"{run_dir / STATE}: {problems[0]}; resuming from the checkpoint before it "
                       f"(state.prev.pt, iteration {state['iteration']}).")
    raise RunFolderError(f"Cannot resume {run_dir}: {'; '.join(problems)}. Start the run again with --overwrite "
                         "(or choose another --out).")


# ---------------------------------------------------------------------- the folder and its lock
def default_out(name: str) -> Path:
    out = Path("runs") / f"{datetime.now():%Y%m%d-%H%M%S}-{name}"
    i = 1
    while out.exists():
        out = out.with_name(f"{out.name}-{i}")
        i += 1
    return out


@dataclass(frozen=True)
class Wording:
    """How the caller of :meth:`RunFolder.claim` names its options, so that a refusal says what
    to do in the caller's terms (the command line's by default; the callbacks take keywords)."""

    out: str = "--out"
    overwrite: str = "--overwrite"
    resume: str | None = "--resume"  # None: the caller cannot continue a run


CLI = Wording()


def _check_writable(out: Path, word: str = "--out") -> None:
    """Fail early (before anything is created) when ``out`` cannot be a writable folder."""
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"{word} {out} is a file, not a folder. Give a folder path (it is created if needed).")
    p = out
    while not p.exists():
        if p.parent == p:
            break
        p = p.parent
    if p.exists() and not p.is_dir():
        raise RunFolderError(f"{word} {out}: {p} is a file, so the folder cannot be created. Give another {word}.")
    if p.exists() and not os.access(p, os.W_OK | os.X_OK):
        raise RunFolderError(f"{word} {out}: {p} is not writable for this user. Give a folder you can write to.")


def _read_status(folder: Path) -> str | None:
    try:
        return read_json(folder / "phases.json").get("status")
    except Exception:
        return None


def run_writer(folder: Path) -> str | None:
    """Who wrote the run in ``folder``, from its config.json: ``"run"`` (``phasescope run``), the
    integration's source (``"lightning"``, ``"transformers"``), ``"theory"``; None without a
    readable config.json."""
    try:
        doc = read_json(Path(folder) / "config.json")
    except Exception:
        return None
    if not isinstance(doc, dict):
        return None
    if isinstance(doc.get("integration"), dict):
        return str(doc["integration"].get("source") or "integration")
    if str(doc.get("kind", "")).startswith("theory"):
        return "theory"
    return "run" if "config" in doc else None


def _writer_name(writer: str | None) -> str:
    if writer in ("run", "theory", "analyze"):
        return f"`phasescope {writer}`"
    return f"the {writer} callback"


class RunFolder:
    """A run folder claimed for writing: created if needed, locked, inspected. The folder of
    every writer (:class:`phasescope.run.runfolder.RunWriter` is the one that writes runs).

    ``mode`` says what the run does with it: ``new`` (empty or new folder), ``resume`` (continue
    the run there: a saved state exists, or a callback's Trainer resumes from its own checkpoint),
    ``restart`` (a ``phasescope run`` that ended before its first checkpoint: starts again from
    iteration 0), ``overwrite``. Nothing is deleted until :meth:`prepare`, which the caller
    invokes once the configuration, data and model are known to be good. Used as a context
    manager (or :meth:`close` with the exception): on an error before :meth:`prepare` a folder
    this claim created is removed again; the lock is always released.
    """

    def __init__(self, path: Path, *, resume: bool = False, overwrite: bool = False, seeds: bool = False,
                 writer: str = "run", wording: Wording = CLI):
        self.path, self.resume, self.overwrite, self.seeds = Path(path), resume, overwrite, seeds
        self.writer, self.wording = writer, wording
        self.created = False
        self.lock_created = False
        self.prepared = False
        self.mode = "new"
        self.notes: list[str] = []
        self._fd: int | None = None

    # -- claiming
    @classmethod
    def claim(cls, out: Path | str | None, name: str, *, resume: bool = False, overwrite: bool = False,
              seeds: bool = False, writer: str = "run", wording: Wording = CLI) -> "RunFolder":
        """Claim ``out`` (default: a new folder under runs/ named after ``name``) for ``writer``
        (``run``, ``theory``, or a callback's source: ``lightning``, ``transformers``).

        A folder holding another run is refused (:class:`RunFolderError`, saying what to do in
        ``wording``'s terms) unless ``overwrite`` (only phasescope's files go, and only at
        :meth:`prepare`) or ``resume`` (that run continues: for ``run``, from its saved state; for a
        callback, a run of the same callback whose Trainer resumes from its own checkpoint); a
        folder another process is writing is refused (:class:`RunLockedError`) whatever the options."""
        if resume and overwrite and writer == "run":
            raise RunFolderError("--resume and --overwrite contradict each other: choose one.")
        out = Path(out) if out is not None else default_out(name)
        _check_writable(out, wording.out)
        if resume and not out.exists() and writer == "run":
            raise RunFolderError(f"Cannot resume: {out} does not exist. Start a new run (without --resume).")
        folder = cls(out, resume=resume, overwrite=overwrite, seeds=seeds, writer=writer, wording=wording)
        try:
            folder._create_and_lock(mark=False)
            folder._inspect()
            folder._mark()  # only now: a refused claim leaves every file as it was, the lock file too
        except BaseException:
            folder._abandon()
            raise
        return folder

    def _create_and_lock(self, *, mark: bool = True) -> None:
        try:
            self.created = not self.path.exists()
            self.path.mkdir(parents=True, exist_ok=True)
            lock = self.path / LOCK
            self.lock_created = not lock.exists()
            self._fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RunFolderError(f"{self.wording.out} {self.path}: cannot create the run folder or its lock file "
                                 f"({e.strerror or e}). Give a folder you can write to.") from e
        try:
            import fcntl  # lazy: fcntl exists only on POSIX (Windows: no lock)
        except ImportError:  # Windows: no advisory locks; concurrent runs are not detected
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            try:
                pid = os.pread(self._fd, 32, 0).decode().strip()
            except OSError:
                pid = ""
            os.close(self._fd)
            self._fd = None
            self.created = self.lock_created = False  # not ours to remove
            locked = RunLockedError(
                f"{self.path} is in use by another phasescope process{f' (pid {pid})' if pid else ''}. "
                f"Wait for it to finish, or choose another {self.wording.out}.")
            locked.pid = pid
            raise locked from None
        if mark:
            self._mark()

    def _mark(self) -> None:
        """Write this process's id into the held lock file (named by a refused second writer)."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def _advice(self, *, resumable: bool) -> str:
        """What to do about a folder that holds a run, in the caller's terms."""
        w = self.wording
        options = ([f"{w.resume} to continue that run"] if resumable and w.resume else []) + \
            [f"{w.overwrite} to replace it"]
        return f"Pass {', '.join(options)}, or choose another {w.out}."

    def _inspect(self) -> None:
        removed = remove_temporary(self.path)
        if removed:
            self.notes.append(f"removed {len(removed)} temporary file(s) left by an earlier process that was killed")
        entries = _entries(self.path)
        foreign = foreign_entries(self.path)
        has_state = (self.path / STATE).exists() or (self.path / PREV_STATE).exists()
        status = _read_status(self.path)
        held_by = run_writer(self.path)  # who wrote the run there (None: no readable config.json)
        w = self.wording
        # a single run that ended before its first checkpoint: config.json, no state, no final status
        # (a callback's run has no state.pt by design, and a theory run no status: neither is restarted)
        restartable = (self.writer == "run" and not self.seeds and not foreign and not has_state and status is None
                       and held_by == "run")
        if self.seeds:
            if self.resume or not entries:
                self.mode = "resume" if self.resume else "new"
                return
        elif self.resume and self.writer != "run":  # a callback whose Trainer resumes from its checkpoint
            if not entries or held_by == self.writer:
                self.mode = "resume" if entries else "new"
                return
        elif self.resume:
            if has_state:
                self.mode = "resume"
                return
            if restartable:
                self.mode = "restart"
                self.notes.append(f"{self.path} has no saved checkpoint (the run ended before its first one); "
                                  "starting it again from iteration 0")
                return
            raise RunFolderError(f"Cannot resume: {self.path} holds no saved state (state.pt). "
                                 + ("It does not look like a phasescope run folder; choose another --out."
                                    if foreign else "Run the same command without --resume to start the run"
                                    + (", with --overwrite to replace what is there." if entries else ".")))
        elif not entries:
            self.mode = "new"
            return
        if self.overwrite:
            if foreign:
                shown = ", ".join(foreign[:8]) + (f" and {len(foreign) - 8} more" if len(foreign) > 8 else "")
                raise RunFolderError(
                    f"{w.overwrite} refused: {self.path} holds files phasescope did not write ({shown}). "
                    f"Nothing was deleted. Move them away or choose another {w.out}.")
            self.mode = "overwrite"
            return
        if restartable:
            self.mode = "restart"
            self.notes.append(f"{self.path} holds a run that ended before its first checkpoint; starting it again")
            return
        resumable = held_by == self.writer and (self.writer != "run" or has_state)
        if foreign:
            shown = ", ".join(foreign[:8]) + (f" and {len(foreign) - 8} more" if len(foreign) > 8 else "")
            if not (self.path / "config.json").exists():
                raise RunFolderError(f"{self.path} already exists and holds other files ({shown}): it is not a "
                                     f"phasescope run folder. Choose another {w.out} ({w.overwrite} deletes nothing "
                                     "while other files are there).")
            raise RunFolderError(f"{self.path} already exists and holds a run and files phasescope did not write "
                                 f"({shown}). " + (f"Pass {w.resume} to continue that run, or choose"
                                                   if resumable and w.resume else "Choose")
                                 + f" another {w.out} ({w.overwrite} deletes nothing while other files are there).")
        what = "holds a finished run" if status else "holds a run"
        if held_by is not None and held_by != self.writer:
            what += f" of {_writer_name(held_by)}"
        if self.resume:  # a callback resuming, but the run there is not its own
            raise RunFolderError(f"{self.path} already exists and {what}, not a run of {_writer_name(self.writer)} "
                                 f"to continue. Pass {w.overwrite} to replace it, or choose another {w.out}.")
        raise RunFolderError(f"{self.path} already exists and {what}. {self._advice(resumable=resumable)}")

    # -- after validation
    def prepare(self) -> None:
        """Clear the previous run's files (overwrite, restart) before the first write."""
        if self.mode in ("overwrite", "restart"):
            clear_run_files(self.path)
        self.prepared = True

    @property
    def held(self) -> bool:
        """Whether this claim holds the folder (claimed and not yet released)."""
        return self._fd is not None

    # -- release
    def _abandon(self) -> None:
        """Undo the claim when nothing was written: remove the lock file and the folder we created."""
        try:
            if self._fd is not None and self.lock_created:
                (self.path / LOCK).unlink(missing_ok=True)
            if self._fd is not None and self.created and not _entries(self.path):
                (self.path / LOCK).unlink(missing_ok=True)
                self.path.rmdir()
        except OSError:
            pass
        self.release()

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def close(self, exc: BaseException | None = None) -> None:
        """End the claim; after an error (``exc``) before :meth:`prepare`, undo it (see
        :meth:`_abandon`). Always releases the lock."""
        if exc is not None and self._fd is not None and not self.prepared:
            self._abandon()
        self.release()

    def __del__(self) -> None:  # a claim dropped without close(): its process no longer holds the folder
        try:
            self.release()
        except Exception:  # noqa: BLE001  interpreter shutdown
            pass

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.close(exc)
        return False


def clear_run_files(folder: Path) -> list[str]:
    """Delete the files phasescope writes in ``folder`` (and its seed-N sub-folders); keep the lock
    and anything else. Returns what was removed."""
    removed = []
    for p in sorted(Path(folder).iterdir()):
        if p.is_dir() and not p.is_symlink() and _SEED_DIR.match(p.name):
            removed += [f"{p.name}/{n}" for n in clear_run_files(p)]
            (p / LOCK).unlink(missing_ok=True)
            try:
                p.rmdir()
            except OSError:
                pass
        elif p.is_dir() and not p.is_symlink() and p.name == CHECKPOINTS:
            for q in sorted(p.iterdir()):
                if q.is_file() and (_CHECKPOINT_FILE.match(q.name) or _TMP.match(q.name)):
                    q.unlink()
                    removed.append(f"{p.name}/{q.name}")
            try:
                p.rmdir()
            except OSError:
                pass
        elif p.is_file() and (p.name in run_files() or is_temporary(p.name)) and p.name != LOCK:
            p.unlink()
            removed.append(p.name)
    return removed


class locked_folder:
    """Hold an existing run folder's lock for a reader that rewrites files (``phasescope report``)."""

    def __init__(self, path: Path | str):
        self.folder = RunFolder(Path(path))

    def __enter__(self) -> RunFolder:
        if not self.folder.path.is_dir():
            raise FileNotFoundError(f"{self.folder.path} is not a folder.")
        self.folder._create_and_lock()
        return self.folder

    def __exit__(self, *exc) -> bool:
        self.folder.release()
        return False


def writer_pid(folder: Path | str) -> str | None:
    """The process id recorded in ``.lock`` while another process holds the folder's lock (a run
    in progress), else None. Only reads: creates no lock file, never blocks."""
    try:
        import fcntl  # lazy: fcntl exists only on POSIX (Windows: no lock)

        fd = os.open(Path(folder) / LOCK, os.O_RDONLY)
    except (ImportError, OSError):  # no lock file (or no flock): no process claims the folder
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        try:
            return os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        except OSError:
            return "?"
    finally:
        os.close(fd)  # and with it the shared lock, if taken
    return None


# ---------------------------------------------------------------------- Ctrl-C during writes
class InterruptGuard:
    """SIGINT handling for a run (installed only in the main thread; the previous handler is
    restored on exit).

    The first Ctrl-C raises KeyboardInterrupt as usual, except inside :meth:`protect` (a
    checkpoint being written), where it is held until the block ends, and inside
    :meth:`closing` (the run's last write: status and figures), where it is ignored. Once a
    run has been interrupted, further Ctrl-C are ignored, so the final write always completes.
    With ``ignore_after`` (the command-line process, which is about to exit), an interrupted
    guard leaves Ctrl-C ignored instead of restoring the previous handler, so the exit code
    stays 130. ``SIGKILL`` cannot be caught; atomic writes cover it.
    """

    def __init__(self, *, ignore_after: bool = False):
        self.ignore_after = ignore_after
        self.interrupted = False  # a KeyboardInterrupt has been raised (or caught) for this run
        self.pending = False
        self.depth = 0
        self.ending = False
        self._previous = None
        self._installed = False

    def _handler(self, signum, frame) -> None:
        if self.interrupted or self.ending or self.depth:
            self.pending = True
            return
        self.interrupted = True
        raise KeyboardInterrupt

    def __enter__(self) -> "InterruptGuard":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
            self._installed = True
        return self

    def __exit__(self, *exc) -> bool:
        if self._installed:
            keep = signal.SIG_IGN if (self.ignore_after and self.interrupted) else self._previous
            signal.signal(signal.SIGINT, keep if keep is not None else signal.default_int_handler)
            self._installed = False
        return False

    def protect(self) -> "_Protected":
        """Hold a Ctrl-C until the block has ended, then raise it."""
        return _Protected(self)

    def closing(self) -> "_Closing":
        """Ignore Ctrl-C during the block (the run's last write)."""
        return _Closing(self)


class _Protected:
    def __init__(self, guard: InterruptGuard):
        self.guard = guard

    def __enter__(self):
        self.guard.depth += 1
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        g = self.guard
        g.depth -= 1
        if exc_type is None and g.depth == 0 and g.pending and not (g.interrupted or g.ending):
            g.pending = False
            g.interrupted = True
            raise KeyboardInterrupt
        return False


class _Closing:
    def __init__(self, guard: InterruptGuard):
        self.guard = guard

    def __enter__(self):
        self.guard.ending = True
        return self

    def __exit__(self, *exc) -> bool:
        self.guard.ending = False
        self.guard.pending = False
        return False
