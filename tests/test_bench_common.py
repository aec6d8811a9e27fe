"""The benchmarks' helpers: the live-tensor-bytes counter the FlexEControl bench measures memory with."""

from __future__ import annotations

import torch

from bench.common import LiveTensorBytes

MB = 2**20


def test_live_tensor_bytes_counts_peak_and_frees():
    weight = torch.ones(1024, 256)  # 1 MB, made before: not counted, nor its views
    with LiveTensorBytes([weight]) as memory:
        view = weight.t()
        a = torch.zeros(256, 1024)  # 1 MB
        b = a * 2  # 1 MB more: peak 2 MB
        a.add_(1)  # in place: same storage, nothing new
        del a, b
        c = torch.zeros(512, 1024)  # 2 MB after the frees: peak stays 2 MB
    assert memory.peak == 2 * MB
    assert memory.current == 2 * MB
    del c
    assert memory.current == 0
    assert view.shape == (256, 1024)


def test_live_tensor_bytes_sees_backward_and_optimiser_state():
    layer = torch.nn.Linear(512, 512)  # 1 MB of weight
    optimizer = torch.optim.Adam(layer.parameters())
    with LiveTensorBytes([*layer.parameters()]) as memory:
        layer(torch.randn(8, 512)).square().sum().backward()
        optimizer.step()
    # the weight's gradient and Adam's two moments, 1 MB each, are alive at the end
    assert memory.current >= 3 * MB
    assert memory.peak >= memory.current
