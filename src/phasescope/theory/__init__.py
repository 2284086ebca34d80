"""The single-layer theory of the learning phases: a data model with typical and atypical
samples, a linear softmax classifier trained by gradient descent, exact measurements."""
from ..data.datamodel import ATYPICAL_KINDS, DataModel
from .single_layer import LinearReconstruction, TheoryResult, Training, gradient_shares, simulate

__all__ = ["ATYPICAL_KINDS", "DataModel", "LinearReconstruction", "TheoryResult", "Training", "gradient_shares",
           "simulate"]
