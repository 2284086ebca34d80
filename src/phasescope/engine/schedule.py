"""Log-spaced checkpoint schedules: iteration 0, powers of two, and the last iteration."""
from __future__ import annotations


def log_schedule(last: int, points_per_octave: int = 1) -> list[int]:
    """Iterations at which to measure: 0, 1, 2, 4, ..., up to ``last``, plus ``last``.

    With ``points_per_octave=k`` each octave [2^j, 2^(j+1)) gets k points spaced
    geometrically (rounded to integers, duplicates dropped), e.g. k=2 gives
    0, 1, 2, 3, 4, 6, 8, 11, 16, ...
    """
    if last < 0:
        raise ValueError(f"last must be >= 0; got {last}.")
    if points_per_octave < 1:
        raise ValueError(f"points_per_octave must be >= 1; got {points_per_octave}.")
    points = {0, last}
    j = 0
    while 2**j <= last:
        for k in range(points_per_octave):
            it = int(round(2 ** (j + k / points_per_octave)))
            if it <= last:
                points.add(it)
        j += 1
    return sorted(points)
