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


def build_together(input_shape, num_classes, width=1.0):
    """For the two-node test: in a Ray worker, a build waits (up to 60 s) until builds have started
    in two worker processes ($PHASESCOPE_TEST_BARRIER lists them), so that each node of a 2-node,
    1-CPU-each cluster holds a checkpoint at once however long its workers take to start (the
    warm-up tasks hold the slots meanwhile, and warm checkpoints take milliseconds)."""
    folder = os.environ.get("PHASESCOPE_TEST_BARRIER")
    if folder and str(os.getpid()) != os.environ.get("PHASESCOPE_TEST_DRIVER_PID"):
        open(os.path.join(folder, str(os.getpid())), "w").close()
        deadline = time.monotonic() + 60
        while len(os.listdir(folder)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    return build_model("cnn", input_shape, num_classes, width=width)
