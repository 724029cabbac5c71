"""The input checks of ``bnlessons._validate``: a wrong type is a TypeError, a bad
value a ValueError, and the message names the argument and shows what was given."""
import math

import pytest
import torch

from bnlessons._validate import (
    check_eps,
    check_fraction,
    check_int,
    check_nonnegative,
    check_number,
    check_pair,
    check_positive,
    check_tensor,
)

NOT_NUMBERS = [True, False, None, "1", [1.0], torch.tensor(1.0), 1j]
NON_FINITE = [math.nan, math.inf, -math.inf]
NUMBER_HELPERS = [check_number, check_positive, check_nonnegative, check_fraction]


@pytest.mark.parametrize("helper", NUMBER_HELPERS)
@pytest.mark.parametrize("bad", NOT_NUMBERS, ids=repr)
def test_a_number_of_the_wrong_type_is_a_type_error_naming_the_argument(helper, bad):
    with pytest.raises(TypeError, match=r"^rate must be a finite number.*got .*\(\w+\)$"):
        helper(bad, "rate")


@pytest.mark.parametrize("helper", NUMBER_HELPERS)
@pytest.mark.parametrize("bad", NON_FINITE, ids=repr)
def test_nan_and_inf_are_bad_values(helper, bad):
    with pytest.raises(ValueError, match=rf"^rate must be a finite number.*got {bad!r}$"):
        helper(bad, "rate")


def test_numbers_come_back_as_floats_of_the_same_value():
    assert check_number(-3, "x") == -3.0 and isinstance(check_number(-3, "x"), float)
    assert check_positive(0.25, "lr") == 0.25
    assert check_nonnegative(0, "wd") == 0.0
    assert check_fraction(1, "p") == 1.0
    assert check_eps(1e-5) == 1e-5


@pytest.mark.parametrize("call, words", [
    (lambda: check_positive(0, "lr"), r"lr must be a finite number > 0, got 0$"),
    (lambda: check_positive(-0.5, "lr"), r"lr must be a finite number > 0, got -0.5$"),
    (lambda: check_nonnegative(-1e-9, "wd"), r"wd must be a finite number >= 0, got -1e-09$"),
    (lambda: check_fraction(1.5, "p"), r"p must be a finite number in \[0, 1\], got 1.5$"),
    (lambda: check_fraction(-0.1, "p"), r"p must be a finite number in \[0, 1\], got -0.1$"),
    (lambda: check_fraction(0, "keep", zero=False), r"keep .* in \(0, 1\], got 0$"),
    (lambda: check_fraction(1.0, "drop", one=False), r"drop .* in \[0, 1\), got 1.0$"),
    (lambda: check_number(0.5, "r", low=1), r"r must be a finite number >= 1, got 0.5$"),
    (lambda: check_number(1, "f", low=1, low_open=True), r"f .* > 1, got 1$"),
    (lambda: check_number(3, "x", high=2), r"x must be a finite number <= 2, got 3$"),
    (lambda: check_number(2, "x", high=2, high_open=True), r"x .* < 2, got 2$"),
    (lambda: check_number(5, "x", low=0, high=4), r"x .* in \[0, 4\], got 5$"),
    (lambda: check_eps(-1.0), r"eps must be a finite number >= 0, got -1.0$"),
])
def test_out_of_range_is_a_value_error_that_says_the_range(call, words):
    with pytest.raises(ValueError, match=words):
        call()


def test_bounds_are_included_unless_open():
    assert check_fraction(0, "p") == 0.0 and check_fraction(1, "p") == 1.0
    assert check_fraction(1, "keep", zero=False) == 1.0
    assert check_fraction(0, "drop", one=False) == 0.0
    assert check_number(1, "r", low=1) == 1.0 and check_number(2, "x", high=2) == 2.0
    assert check_positive(1e-300, "lr") == 1e-300


def test_check_int_range_and_types():
    assert check_int(3, "n") == 3
    assert check_int(0, "layer", 0, 2) == 0 and check_int(2, "layer", 0, 2) == 2
    with pytest.raises(ValueError, match=r"^layer must be an int in \[0, 2\], got 3$"):
        check_int(3, "layer", 0, 2)
    with pytest.raises(ValueError, match=r"^n must be an int >= 1, got 0$"):
        check_int(0, "n")
    for bad in (True, 2.0, "2", None):
        with pytest.raises(TypeError, match=r"^n must be an int >= 1, got "):
            check_int(bad, "n")
    with pytest.raises(TypeError, match=r"layer must be an int in \[0, 2\]"):
        check_int(1.0, "layer", 0, 2)


def test_check_pair():
    assert check_pair((1, 2.5), "scale_range") == (1.0, 2.5)
    assert check_pair([0.5, 0.5], "band", low=0) == (0.5, 0.5)
    with pytest.raises(TypeError, match=r"^scale_range must be a pair \(low, high\).*float"):
        check_pair(1.0, "scale_range")
    with pytest.raises(ValueError, match="scale_range must be a pair .* 3 values"):
        check_pair((1, 2, 3), "scale_range")
    with pytest.raises(ValueError, match=r"low <= high, got \(2.0, 1.0\)"):
        check_pair((2.0, 1.0), "scale_range")
    with pytest.raises(TypeError, match=r"^scale_range\[1\] must be a finite number"):
        check_pair((1.0, "2"), "scale_range")
    with pytest.raises(ValueError, match=r"^scale_range\[0\] must be a finite number"):
        check_pair((math.nan, 2.0), "scale_range")
    with pytest.raises(ValueError, match=r"^band\[0\] must be a finite number >= 0, got -1"):
        check_pair((-1, 2), "band", low=0)


def test_check_tensor():
    t = torch.zeros(2, dtype=torch.int64)
    assert check_tensor(t, "y") is t
    with pytest.raises(TypeError, match="^y must be a torch.Tensor, got list$"):
        check_tensor([0, 1], "y")
