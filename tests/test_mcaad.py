"""The MC-AAD layer against the patent's equations (§0110–§0120), and the generator's plumbing."""

import pytest
import torch

from callsynth.model.generator import Discriminator, Generator
from callsynth.model.mcaad import MCAADLayer


def inputs(n_attr, b=2, c=8, catt=5, hw=6, dims=(7, 4, 3)):
    torch.manual_seed(0)
    return (torch.randn(b, c, hw, hw) * 3 + 1, torch.randn(b, catt, hw, hw),
            [torch.randn(b, d) for d in dims[:n_attr]])


@pytest.mark.parametrize("n_attr", [2, 3])
def test_softmax_masks_sum_to_one_and_fuse_the_branches(n_attr):
    h, z_att, z_x = inputs(n_attr)
    layer = MCAADLayer(8, 5, [7, 4, 3][:n_attr])
    h_bar = layer.normalise(h)
    assert torch.allclose(h_bar.mean((2, 3)), torch.zeros(2, 8), atol=1e-5)
    assert torch.allclose(h_bar.std((2, 3), unbiased=False), torch.ones(2, 8), atol=1e-3)
    masks = layer.attention(h_bar)
    assert masks.shape == (2, n_attr + 1, 6, 6)
    assert torch.allclose(masks.sum(1), torch.ones(2, 6, 6), atol=1e-6)
    # The output is exactly M_0·A + Σ M_i·E_i with A and E_i from the patent's formulas.
    a = layer.gamma_att(z_att) * h_bar + layer.beta_att(z_att)
    es = [g(z)[:, :, None, None] * h_bar + bt(z)[:, :, None, None]
          for g, bt, z in zip(layer.gamma_x, layer.beta_x, z_x)]
    expected = masks[:, :1] * a + sum(masks[:, i + 1:i + 2] * e for i, e in enumerate(es))
    assert torch.allclose(layer(h, z_att, z_x), expected, atol=1e-5)


def test_single_attribute_uses_one_sigmoid_mask_and_its_complement():
    h, z_att, z_x = inputs(1)
    layer = MCAADLayer(8, 5, [7])
    assert layer.masks.out_channels == 1
    h_bar = layer.normalise(h)
    m = torch.sigmoid(layer.masks(h_bar))
    a = layer.gamma_att(z_att) * h_bar + layer.beta_att(z_att)
    e = layer.gamma_x[0](z_x[0])[:, :, None, None] * h_bar + layer.beta_x[0](z_x[0])[:, :, None, None]
    assert torch.allclose(layer(h, z_att, z_x), m * a + (1 - m) * e, atol=1e-5)
    assert ((m > 0) & (m < 1)).all()


def test_gradients_reach_every_branch_and_wrong_inputs_are_refused():
    h, z_att, z_x = inputs(3)
    h.requires_grad_(True)
    layer = MCAADLayer(8, 5, [7, 4, 3])
    layer(h, z_att, z_x).square().mean().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert h.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="attribute vectors"):
        layer(h, z_att, z_x[:2])
    with pytest.raises(ValueError):
        MCAADLayer(8, 5, [])


def test_generator_and_discriminator_shapes():
    g = Generator(4, [16, 8], widths=[8, 16, 16], block_channels=[16, 16, 8, 3])
    image = torch.randn(2, 4, 32, 32)
    out, z_att = g(image, [torch.randn(2, 16), torch.randn(2, 8)])
    assert out.shape == (2, 3, 32, 32) and out.abs().max() <= 1
    assert [z.shape[-1] for z in z_att] == [4, 8, 16, 32]
    assert [d.shape[-1] for d in Discriminator(3, 8)(out)] == [4, 2]


def test_a_fused_layer_computes_what_the_separate_ones_do():
    """MCAADLayer.fuse (what loading a network for inference does) changes the operations, not the result."""
    torch.manual_seed(1)
    layer = MCAADLayer(8, 6, [5, 3, 2]).eval()
    h, z_att = torch.randn(2, 8, 6, 10), torch.randn(2, 6, 6, 10)
    z_x = [torch.randn(2, 5), torch.randn(2, 3), torch.randn(2, 2)]
    with torch.no_grad():
        before = layer(h, z_att, z_x)
        after = layer.fuse()(h, z_att, z_x)
    assert torch.allclose(before, after, atol=1e-5)
