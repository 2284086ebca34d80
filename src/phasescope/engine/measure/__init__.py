"""The measurement engine: frozen copies and hooks (capture), exact ridge decoders and
probes (ridge), the iterative conv decoder (conv_decoder), and the tracker that runs them
at checkpoints (phasescope.engine.tracker)."""
