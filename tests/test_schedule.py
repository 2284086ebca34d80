import pytest

from phasescope import log_schedule


def test_powers_of_two_plus_zero_and_last():
    assert log_schedule(4096) == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
    assert log_schedule(100) == [0, 1, 2, 4, 8, 16, 32, 64, 100]


def test_points_per_octave():
    s = log_schedule(16, points_per_octave=2)
    assert s == [0, 1, 2, 3, 4, 6, 8, 11, 16]
    assert set(log_schedule(1000)) <= set(log_schedule(1000, points_per_octave=2))


def test_bad_arguments():
    with pytest.raises(ValueError):
        log_schedule(-1)
    with pytest.raises(ValueError):
        log_schedule(10, points_per_octave=0)
