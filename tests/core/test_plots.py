"""bnlessons.plots: the moving average of noisy curves."""
import pytest
import torch

from bnlessons.plots import moving_average


def test_moving_average_is_trailing_and_validates():

    out = moving_average([2.0, 4.0, 6.0, 8.0], 3)
    assert out.tolist() == [2.0, 3.0, 4.0, 6.0]  # 8's window is 4, 6, 8: no look-ahead
    assert moving_average(torch.tensor([1.0, 3.0]), 1).tolist() == [1.0, 3.0]
    with pytest.raises(ValueError, match="window"):
        moving_average([1.0], 0)
    with pytest.raises(TypeError, match="window"):
        moving_average([1.0], 2.5)
    with pytest.raises(ValueError, match="non-empty"):
        moving_average([], 2)
