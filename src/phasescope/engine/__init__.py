"""The measurement engine: what a checkpoint measures and how phases are decided.

``measure/`` (ridge decoder, probes, feature capture, sharding), ``layers`` (finding a layer in any
model), ``stats`` (bootstrap intervals), ``schedule`` (log-spaced checkpoints), ``phases`` (the
phase rule), ``settings`` (typed measurement settings), ``diagnostics`` and ``tracker``
(:class:`PhaseTracker`, which runs them inside any training loop). It knows nothing of run
folders, reports or command lines.
"""
