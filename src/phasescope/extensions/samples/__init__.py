"""Per-sample dynamics: who are "the few" the network fits last?

    ext = SampleDynamics()
    tracker = PhaseTracker(model, layers, fit_data, test_data, extensions=[ext])
    ...train, calling tracker.maybe_measure(model, t)...
    ext.samples()    # one row per training sample: learned_at, forgotten, final loss/margin, typicality
    ext.summary()    # gradient concentration, when it crosses one half, typicality correlations

At every checkpoint, over the tracker's fit subset of the training set (or ``data`` of
your own), :class:`SampleDynamics` records each sample's loss, correctness, margin and
the norm of its gradient w.r.t. the final ``nn.Linear`` (weights and bias). The norm is
closed form for softmax cross-entropy: with probabilities p, one-hot label e and the
final layer's input a, grad_W = (p - e) a^T and grad_b = p - e, so

    ||grad||^2 = ||p - e||^2 (||a||^2 + 1)        (without a bias: ||p - e||^2 ||a||^2)

No per-sample backward pass is run: the tracker captures ``a`` in the forward pass it
already makes over the fit set (``requires = Requires(module_inputs=(HEAD,))``).

Per checkpoint it adds to metrics.csv (layer ``model``, split ``train``):

* ``grad_share_top1`` / ``grad_share_top10``: share of the sum of per-sample gradient
  norms carried by the 1% / 10% of samples with the largest norms (0.01 / 0.1 when all
  samples pull equally; 1 when one sample carries everything);
* ``grad_effective_fraction``: inverse participation ratio (sum g)^2 / (n sum g^2), the
  effective number of samples driving the gradient as a fraction of n (1 = all equal);
* ``misclassified_fraction``.

Pure functions (``last_layer_grad_norm``, ``learned_at``, ``forgetting_counts``,
``gradient_concentration``, ``class_distance``, ``typicality_correlation``) carry the
science and are tested on their own; the extension only records and assembles.
"""
from .extension import SampleDynamics, SamplesOptions, sample_extensions
from .metrics import (HISTORY, METRICS, class_distance, curves_from_metrics, effective_fraction, first_crossing,
                      forgetting_counts, gradient_concentration, last_layer_grad_norm, learned_at, logit_margin,
                      summarise_samples, top_share, typicality_correlation)
from .report import plot_few, plot_samples, read_samples_table, rebuild_samples, summary_lines, write_samples_table

__all__ = [
    "HISTORY", "METRICS", "SampleDynamics", "SamplesOptions", "class_distance", "curves_from_metrics", "effective_fraction",
    "first_crossing", "forgetting_counts", "gradient_concentration", "last_layer_grad_norm", "learned_at",
    "logit_margin", "plot_few", "plot_samples", "read_samples_table", "rebuild_samples", "sample_extensions",
    "summarise_samples", "summary_lines", "top_share", "typicality_correlation", "write_samples_table",
]
