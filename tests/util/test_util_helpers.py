"""The shared helpers of jacspec._util: positive_int and the seed-to-generator rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jacspec._util.random import numpy_generator, torch_generator
from jacspec._util.validation import positive_int


@pytest.mark.parametrize("value", [1, 7, np.int64(3), np.uint8(2)])
def test_positive_int_accepts_integers_and_returns_int(value) -> None:
    out = positive_int("n", value)
    assert out == int(value) and type(out) is int


@pytest.mark.parametrize("value", [0, -1, 2.0, 2.7, "3", True, None, np.float64(3)])
def test_positive_int_rejects_with_one_sentence_naming_the_argument(value) -> None:
    with pytest.raises(ValueError, match=r"^width must be a positive integer; got ") as err:
        positive_int("width", value)
    assert "\n" not in str(err.value)


def test_positive_int_allow_none() -> None:
    assert positive_int("batch_size", None, allow_none=True) is None
    assert positive_int("batch_size", 4, allow_none=True) == 4
    with pytest.raises(ValueError, match="batch_size must be a positive integer or None"):
        positive_int("batch_size", 0, allow_none=True)


def test_numpy_generator_matches_default_rng_and_passes_generators_through() -> None:
    a = numpy_generator(5).standard_normal(4)
    b = np.random.default_rng(5).standard_normal(4)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(numpy_generator(np.int32(5)).standard_normal(4), b)
    g = np.random.default_rng(1)
    assert numpy_generator(g) is g
    assert isinstance(numpy_generator(None), np.random.Generator)
    for bad in (True, 1.5, "1"):
        with pytest.raises(TypeError, match="seed must be"):
            numpy_generator(bad)


def test_torch_generator_matches_manual_seed_and_leaves_global_state() -> None:
    state = torch.random.get_rng_state()
    a = torch.randn(4, generator=torch_generator(3))
    b = torch.randn(4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert torch.equal(torch.random.get_rng_state(), state)
    g = torch.Generator().manual_seed(0)
    assert torch_generator(g) is g
    assert torch_generator(None, allow_none=True) is None
    for bad in (None, True, 2.0):
        with pytest.raises(TypeError, match="seed must be an int or a torch.Generator"):
            torch_generator(bad)
