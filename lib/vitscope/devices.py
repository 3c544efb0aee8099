"""Device choice shared by every layer: the same code runs on CPU and CUDA, the device is a parameter."""
from __future__ import annotations

import contextlib

import torch


def resolve_device(device: str | None) -> str:
    """``"auto"``/``None`` -> CUDA when available else CPU; an explicit CUDA request without CUDA is an error."""
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} was requested but torch sees no CUDA device; use device='cpu'.")
    return str(device)


@contextlib.contextmanager
def one_cpu_thread():
    """Run torch's CPU ops on one intra-op thread inside the block (restored after). For loops of many small ops
    (minibatch CKA sweeps, frame-by-frame label propagation) that gain nothing from threads: on a shared machine
    (the book runs pages side by side, a user runs a notebook beside other work) idle-spinning threads made each
    small op far slower (measured: 0.5 s vs 0.013 s for one 500-example minibatch CKA; one DAVIS model 560 s with
    two threads on a loaded 2-core machine against 12-29 s with one)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
