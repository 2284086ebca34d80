"""``python -m phasescope.theory [options]``: the same as ``phasescope theory``."""
from .cli import main

main()
