"""vitscope.devices: device resolution and the one-thread guard of the small-op loops."""
import pytest
import torch

from vitscope.devices import one_cpu_thread


def test_one_cpu_thread_sets_one_thread_and_restores_the_count_even_on_error():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with one_cpu_thread():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError), one_cpu_thread():
            raise RuntimeError("a failing sweep")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
