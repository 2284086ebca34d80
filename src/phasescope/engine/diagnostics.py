"""Warnings about runs whose numbers are finite but meaningless.

A network can be destroyed without ever producing NaN: a too-large learning rate kills
every ReLU, the logits become constant, the loss sits at ln(K) and accuracy at chance.
The phases such a run "finds" describe noise. :func:`run_warnings` reads the tidy
results and says so; the warnings go into phases.json and the printed summary.
"""
from __future__ import annotations

import math

import pandas as pd

CHANCE_MARGIN = 0.02     # train accuracy whose lower interval bound is below 1/K + this is "at chance"
STUCK_CHECKPOINTS = 3    # this many last checkpoints with the loss at ln(K) ...
STUCK_TOLERANCE = 0.01   # ... within 1% of ln(K) mean "the loss stopped changing"


def _model_series(df: pd.DataFrame, split: str, metric: str) -> pd.DataFrame:
    s = df[(df.layer == "model") & (df.split == split) & (df.metric == metric)]
    return s.sort_values("iteration")


def run_warnings(df: pd.DataFrame, num_classes: int | None) -> list[str]:
    """Plain-language warnings about a run's results (empty when nothing looks wrong)."""
    if not num_classes or num_classes < 2 or not len(df):
        return []
    out = []
    acc = _model_series(df, "train", "accuracy")
    if len(acc) >= 2:  # at iteration 0 every run is at chance: judge only runs that trained
        last = acc.iloc[-1]
        lower = last.ci_low if pd.notna(last.ci_low) else last.value  # not distinguishable from chance
        chance = 1.0 / num_classes
        if lower <= chance + CHANCE_MARGIN:
            out.append(f"training accuracy at iteration {int(last.iteration)} is {last.value:.3f}, chance level for "
                       f"{num_classes} classes ({chance:.3f}): the network did not learn (a learning rate too high "
                       "or too low, or labels that do not match the inputs); its phases describe noise.")
    loss = _model_series(df, "train", "loss")
    if len(loss) > STUCK_CHECKPOINTS:
        tail = loss.value.iloc[-STUCK_CHECKPOINTS:]
        if ((tail - math.log(num_classes)).abs() <= STUCK_TOLERANCE * math.log(num_classes)).all():
            its = loss.iteration.iloc[-STUCK_CHECKPOINTS:]
            out.append(f"the training loss stayed at ln({num_classes}) = {math.log(num_classes):.3f} from iteration "
                       f"{int(its.iloc[0])} to {int(its.iloc[-1])}: the outputs no longer depend on the input "
                       "(dead units or saturated logits); lower the learning rate.")
    return out
