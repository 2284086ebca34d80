import signal
import threading
import warnings

import pytest
import torch

torch.set_num_threads(1)  # tests are small: one thread is as fast as two and immune to a busy second core

# pytest started as a background job of a non-interactive shell inherits SIGINT ignored (and
# Python then installs no KeyboardInterrupt handler); the Ctrl-C tests need the usual one.
if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def tiny_cfg():
    """A seconds-long run on scikit-learn's 8x8 digits."""
    from phasescope import RunConfig

    return RunConfig(dataset="digits", model="cnn", width=0.5, iterations=64, batch_size=32, lr=0.05,
                     fit_samples=600, test_samples=300, bootstrap=200)


@pytest.fixture(autouse=True)
def _sigint_handler_is_restored(request):
    """A test (or a library it drives) that leaves another SIGINT handler installed would change
    what later tests and their child processes do on Ctrl-C: name it, and put the default back."""
    yield
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        warnings.warn(f"{request.node.nodeid} left SIGINT handled by {signal.getsignal(signal.SIGINT)!r}; "
                      "restored the default.", stacklevel=1)
        signal.signal(signal.SIGINT, signal.default_int_handler)
