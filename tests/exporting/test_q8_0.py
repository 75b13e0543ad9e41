"""How q8_0 blocks are chosen (exporting/q8_0.py): the bytes are GGML's, the scale search is never worse
than llama.cpp's max/127 scale, and GPTQ keeps a layer's outputs closer than rounding each weight."""

import gguf
import numpy as np
import torch

from exporting import q8_0


def test_packed_blocks_read_back_as_scale_times_integer():
    torch.manual_seed(0)
    weights = torch.randn(4, 64)
    scales = q8_0.block_scales(weights)
    integers = q8_0.rounded(weights, scales)
    packed = q8_0.pack(scales, integers)
    assert packed.shape == (4, 2 * 34) and packed.dtype == np.uint8
    back = gguf.quants.dequantize(packed, gguf.GGMLQuantizationType.Q8_0)
    expected = (integers.float().reshape(4, 2, 32) * scales[..., None]).reshape(4, 64)
    assert np.array_equal(back, expected.numpy())


def test_scale_search_is_never_worse_than_max_over_127_and_finds_a_coarser_grid():
    torch.manual_seed(0)
    levels = torch.randint(0, 16, (8, 64)).float()
    on_grid = levels * 0.013 - 0.1  # a Q4_1-like block: 16 levels, an offset
    weights = torch.cat([on_grid, torch.randn(8, 64)])
    blocks = weights.reshape(16, 2, 32)
    plain = (blocks.abs().amax(-1) / 127).half().float()
    searched = q8_0.block_scales(weights)

    def error(scales):
        steps = (blocks / scales[..., None]).round().clamp(-127, 127) * scales[..., None]
        return (steps - blocks).square().sum(-1)

    assert (error(searched) <= error(plain)).all()
    assert error(searched)[:8].sum() < 0.5 * error(plain)[:8].sum()


def test_gptq_keeps_outputs_closer_than_rounding_each_weight():
    torch.manual_seed(0)
    mixing = torch.randn(64, 64)
    inputs = torch.randn(512, 64) @ mixing  # correlated inputs, as a layer's are
    weights = torch.randn(16, 64)
    hessian = inputs.T @ inputs
    scales = q8_0.block_scales(weights)

    def output_error(integers):
        dequantized = (integers.float().reshape(16, 2, 32) * scales[..., None]).reshape(16, 64)
        return (inputs @ (dequantized - weights).T).square().sum()

    assert output_error(q8_0.gptq(weights, hessian, scales)) < 0.7 * output_error(q8_0.rounded(weights, scales))
