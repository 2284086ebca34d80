"""Measurement: activations, decoders and probes fitted on a frozen network."""
