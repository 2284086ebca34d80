"""ConvDecoder against known answers: an invertible map of the input is decoded almost
exactly, pure noise not at all; fits are deterministic and leave the global RNG alone."""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from phasescope.engine.measure.conv_decoder import (
    ConvDecoder,
    DecoderConvergenceWarning,
    NotFittedError,
    _should_stop,
)

N_FIT, N_TEST = 200, 100
# small and fast: 16 channels at full resolution, 12 epochs of 4 batches
FAST = dict(epochs=12, lr=1e-2, batch_size=50, channels=16)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """300 images of i.i.d. standard normal pixels, 1x8x8: nothing to guess from smoothness."""
    return torch.randn(N_FIT + N_TEST, 1, 8, 8, generator=torch.Generator().manual_seed(123))


def fit_and_score(H: torch.Tensor, X: torch.Tensor, **params) -> tuple[ConvDecoder, float, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DecoderConvergenceWarning)
        dec = ConvDecoder(**{**FAST, **params}).fit(H[:N_FIT], X[:N_FIT])
    test_mse = float(dec.per_sample_error(H[N_FIT:], X[N_FIT:]).mean())
    trivial = float(X[N_FIT:].var(unbiased=False))  # MSE of predicting the mean image
    return dec, test_mse, trivial


def test_invertible_activations_are_decoded(images):
    # space-to-depth (4 channels at 4x4) is a permutation of the pixels: exactly invertible
    H = F.pixel_unshuffle(images, 2)
    dec, test_mse, trivial = fit_and_score(H, images)
    assert test_mse < 0.1 * trivial
    assert dec.train_mse_ < 0.1 * trivial
    assert dec.predict(H[N_FIT:]).shape == (N_TEST, 1, 8, 8)


def test_noise_activations_are_not_decoded(images):
    H = torch.randn(N_FIT + N_TEST, 4, 4, 4, generator=torch.Generator().manual_seed(7))
    _, test_mse, trivial = fit_and_score(H, images)
    assert test_mse >= 0.9 * trivial


def test_flat_activations_go_through_a_linear_layer(images):
    # flat (N, p) and 1x1-spatial activations take the linear path and decode alike
    flat = images.flatten(1)
    dec_flat, mse_flat, trivial = fit_and_score(flat, images, epochs=3)
    dec_1x1, mse_1x1, _ = fit_and_score(flat.reshape(-1, 64, 1, 1), images, epochs=3)
    assert mse_flat == pytest.approx(mse_1x1, rel=1e-5)
    assert mse_flat < trivial  # learning started
    assert dec_flat.predict(flat[:3]).shape == (3, 1, 8, 8)


@pytest.mark.parametrize("h_shape", [(8, 2, 2), (6, 4, 3), (10,)])
def test_output_is_cropped_to_odd_image_sizes(h_shape):
    X = torch.randn(20, 3, 7, 5)
    H = torch.randn(20, *h_shape)
    dec = ConvDecoder(epochs=1, batch_size=10, channels=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DecoderConvergenceWarning)
        dec.fit(H, X)
    assert dec.predict(H).shape == (20, 3, 7, 5)
    err = dec.per_sample_error(H, X)
    assert err.shape == (20,) and torch.isfinite(err).all()
    manual = ((dec.predict(H) - X) ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(err, manual)


def test_same_seed_same_errors_and_global_rng_untouched(images):
    H = F.pixel_unshuffle(images, 2)
    torch.manual_seed(2024)
    state = torch.get_rng_state()
    errors = []
    for seed in (5, 5, 6):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DecoderConvergenceWarning)
            dec = ConvDecoder(**{**FAST, "epochs": 2, "seed": seed}).fit(H[:N_FIT], images[:N_FIT])
        errors.append(dec.per_sample_error(H[N_FIT:], images[N_FIT:]))
        assert torch.equal(torch.get_rng_state(), state), "fit changed the global torch RNG state"
    assert torch.equal(errors[0], errors[1])
    assert not torch.equal(errors[0], errors[2])


def test_budget_exhausted_warns_and_reports():
    X = torch.randn(40, 1, 8, 8)
    H = F.pixel_unshuffle(X, 2)
    with pytest.warns(DecoderConvergenceWarning, match="epochs=2"):
        dec = ConvDecoder(epochs=2, tol=0.0, batch_size=20, channels=4).fit(H, X)
    assert dec.epochs_run_ == 2 and len(dec.history_) == 2
    assert dec.converged_ is False
    assert isinstance(dec.train_mse_, float)


def test_convergence_criterion_stops_early_without_warning():
    X = torch.randn(40, 1, 8, 8)
    H = F.pixel_unshuffle(X, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DecoderConvergenceWarning)
        # tol=inf: every epoch counts as "no improvement", so training stops after patience+1
        dec = ConvDecoder(epochs=10, tol=float("inf"), patience=2, batch_size=20, channels=4).fit(H, X)
    assert dec.converged_ is True
    assert dec.epochs_run_ == 3 == len(dec.history_)


@pytest.mark.parametrize("history, expected", [
    ([1.0, 0.5, 0.25, 0.125], False),          # still halving
    ([1.0, 0.9999, 0.9998, 0.9997], True),     # three epochs below tol=1e-3
    ([1.0, 0.5, 0.4999, 0.4998], False),       # only two calm epochs
    ([1.0, 1.1, 1.2, 1.3], True),              # getting worse counts as no improvement
    ([1.0, 0.9999, 0.9998], False),            # too short to judge
])
def test_should_stop(history, expected):
    assert _should_stop(history, tol=1e-3, patience=3) is expected


def test_not_fitted_and_shape_errors():
    dec = ConvDecoder()
    with pytest.raises(NotFittedError, match="fit"):
        dec.predict(torch.randn(2, 4, 4, 4))
    with pytest.raises(NotFittedError):
        dec.per_sample_error(torch.randn(2, 4, 4, 4), torch.randn(2, 1, 8, 8))
    X = torch.randn(10, 1, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DecoderConvergenceWarning)
        dec = ConvDecoder(epochs=1, batch_size=5, channels=4).fit(F.pixel_unshuffle(X, 2), X)
    with pytest.raises(ValueError, match="fitted on"):
        dec.predict(torch.randn(2, 4, 2, 2))
    with pytest.raises(ValueError, match="X must have shape"):
        dec.per_sample_error(F.pixel_unshuffle(X, 2), torch.randn(10, 1, 4, 4))
    with pytest.raises(ValueError, match="samples"):
        ConvDecoder().fit(torch.randn(3, 4, 4, 4), torch.randn(4, 1, 8, 8))


def test_init_only_stores_and_fit_validates():
    dec = ConvDecoder(epochs=0, lr=-1)  # no error until fit
    assert dec.get_params()["epochs"] == 0 and dec.get_params()["lr"] == -1
    assert not hasattr(dec, "module_")
    with pytest.raises(ValueError, match="epochs=0"):
        dec.fit(torch.randn(4, 4, 4, 4), torch.randn(4, 1, 8, 8))
    with pytest.raises(ValueError, match="lr=-1"):
        ConvDecoder(lr=-1).fit(torch.randn(4, 4, 4, 4), torch.randn(4, 1, 8, 8))
    with pytest.raises(ValueError, match="seed"):
        ConvDecoder(seed=None).fit(torch.randn(4, 4, 4, 4), torch.randn(4, 1, 8, 8))
    with pytest.raises(ValueError, match="device"):
        ConvDecoder(device="nonsense").fit(torch.randn(4, 4, 4, 4), torch.randn(4, 1, 8, 8))
    assert ConvDecoder(**ConvDecoder(seed=3).get_params()).get_params() == ConvDecoder(seed=3).get_params()
