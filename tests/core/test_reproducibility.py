"""bnlessons.reproducibility.setup: seeds, threads and bad arguments.

The kernel's environment and the numeric pins are tested in tests/test_environment.py.
"""
import pytest
import torch

import bnlessons


def test_setup_is_reproducible_and_validates():
    g1 = bnlessons.setup(7)
    a = (torch.rand(3).tolist(), torch.rand(2, generator=g1).tolist())
    g2 = bnlessons.setup(7)
    b = (torch.rand(3).tolist(), torch.rand(2, generator=g2).tolist())
    assert a == b
    assert torch.get_num_threads() == 1 and torch.are_deterministic_algorithms_enabled()
    assert not torch.backends.mkldnn.enabled and not torch._C._get_nnpack_enabled()
    with pytest.raises(TypeError, match="seed"):
        bnlessons.setup("0")
    with pytest.raises(ValueError, match="threads"):
        bnlessons.setup(0, threads=0)
