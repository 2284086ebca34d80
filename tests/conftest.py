import pytest
import torch

torch.set_num_threads(1)  # tests are small: one thread is as fast as two and immune to a busy second core


@pytest.fixture
def tiny_cfg():
    """A seconds-long run on scikit-learn's 8x8 digits."""
    from phasescope import RunConfig

    return RunConfig(dataset="digits", model="cnn", width=0.5, iterations=64, batch_size=32, lr=0.05,
                     fit_samples=600, test_samples=300, bootstrap=200)
