"""A model factory for the kill -9 test: the first Ray worker that builds it records its pid in
$PHASESCOPE_TEST_KILL_MARKER and waits there to be killed; every other build is immediate."""
import os
import time

from phasescope.run.models import build_model


def build(input_shape, num_classes, width=1.0):
    marker = os.environ.get("PHASESCOPE_TEST_KILL_MARKER")
    if marker and str(os.getpid()) != os.environ.get("PHASESCOPE_TEST_DRIVER_PID"):
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            fd = None
        if fd is not None:
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            time.sleep(120)  # killed meanwhile
    return build_model("cnn", input_shape, num_classes, width=width)
