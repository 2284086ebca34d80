"""The ``transfer`` section of a run's configuration: transfer tasks and the best-features keeper.

Both :class:`~phasescope.transfer.probes.TransferProbes` (``tasks``) and
:class:`~phasescope.stopping.BestFeaturesKeeper` (``keep_best``, ``stop_on_increase``,
``keep_layer``) read it, so it lives in a module of its own that both import.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ...config import ConfigError, Section, comma_list, opt
from .tasks import TransferError, parse_specs


@dataclass
class TransferOptions(Section):
    section: ClassVar[str] = "transfer"
    tasks: list[str] = opt(help="Transfer tasks probed at every checkpoint: colour, class-split, switch:DATASET[@PATH], "
                                "npz:PATH.", factory=list, flag="--transfer", parse=comma_list)
    keep_best: bool = opt(False, "Save the weights at the reconstruction minimum to best_features.pt.",
                          flag="--keep-best")
    stop_on_increase: bool = opt(False, "Like keep_best, and stop training once the reconstruction error rises "
                                        "significantly after its minimum.", flag="--stop-on-increase",
                                 implies={"keep_best": True})
    keep_layer: str | None = opt(None, "Layer whose minimum --keep-best follows [the last tracked layer].")

    def validate(self) -> "TransferOptions":
        if isinstance(self.tasks, str):
            raise ConfigError(f"transfer tasks must be a list of names, e.g. ['colour']; got the string {self.tasks!r}.")
        super().validate()
        if self.stop_on_increase and not self.keep_best:
            raise ConfigError("stop_on_increase needs keep_best (--keep-best/--stop-on-increase): "
                              "stopping keeps the weights at the reconstruction minimum.")
        return self


def validate_options(options: TransferOptions) -> None:
    """Check the task names of a TransferOptions section (raises ConfigError naming the fix)."""
    try:
        parse_specs(options.tasks)
    except TransferError as e:
        raise ConfigError(str(e)) from e
