"""What users call: the command line (``cli``), sweeps, checkpoint analysis and the training-stack
integrations (Lightning, Hugging Face, TensorBoard). Nothing below imports them.
"""
