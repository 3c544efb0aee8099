"""The zoo card's structure block: attention entropy, CKA to the initialisation, the plateau step."""
import math

import numpy as np
import pytest
import timm
import torch

from vitscope.kernels.attention import attention_entropy
from vitscope.zoo.structure import attention_structure, cka_to_init, plateau_step


def _numpy_entropy(attn, n_prefix):
    a = attn[:, :, n_prefix:, n_prefix:].astype(np.float64)
    p = a / a.sum(-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(-1)
    return h.mean(-1)


def test_attention_entropy_uniform_one_hot_and_float64_reference():
    G, n_prefix = 3, 1
    T = n_prefix + G * G
    uniform = torch.full((1, 1, T, T), 1.0 / T)
    assert attention_entropy(uniform, n_prefix).item() == pytest.approx(math.log(G * G))
    one_hot = torch.eye(T).expand(1, 1, T, T).clone()
    assert attention_entropy(one_hot, n_prefix).item() == pytest.approx(0.0, abs=1e-12)
    torch.manual_seed(0)
    attn = torch.softmax(torch.randn(2, 3, T, T) * 2, -1)
    np.testing.assert_allclose(attention_entropy(attn, n_prefix).numpy(), _numpy_entropy(attn.numpy(), n_prefix),
                               rtol=1e-6)


def test_plateau_step_hand_case():
    # decrease from 10 to 1 (total 9): 90 % of it is done when the loss reaches 1.9, in the 4th window
    assert plateau_step([10, 5, 3, 1.5, 1.2, 1.0, 1.1], every=10) == 40
    assert plateau_step([2.0, 2.0, 2.1], every=10) is None
    assert plateau_step([], every=10) is None


def _tiny(seed):
    torch.manual_seed(seed)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=24,
                             depth=2, num_heads=2, num_classes=0)


def test_attention_structure_and_cka_to_init_on_a_tiny_vit():
    images = (torch.rand(8, 3, 32, 32) * 255).to(torch.uint8)
    model = _tiny(0)
    s = attention_structure(model, images)
    assert len(s["distance"]) == len(s["entropy"]) == 2
    assert s["uniform_entropy"] == pytest.approx(math.log(16))
    assert all(0 < e <= s["uniform_entropy"] + 1e-9 for e in s["entropy"])
    cka_self = cka_to_init(model, _tiny(0), images)
    assert cka_self == pytest.approx([1.0, 1.0])               # the same init: CKA 1 at every block
    cka_other = cka_to_init(model, _tiny(1), images)
    assert all(c < 0.999 for c in cka_other)
