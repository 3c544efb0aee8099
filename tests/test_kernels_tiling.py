"""Dense tiling (TM App. B.4): window placement, first-window-wins assembly, and the ViT path end to end."""
import pytest
import timm
import torch

from vitscope.extract.dense import dense_tokens, resize_mask
from vitscope.kernels.tiling import assemble_windows, tiled_size, window_grid, window_starts


def test_window_starts_edge_aligned_last_window():
    assert window_starts(448, 224) == [0, 224]
    assert window_starts(600, 224) == [0, 224, 376]          # 376 = 600 - 224: overlaps the second window
    assert window_starts(224, 224) == [0]
    with pytest.raises(ValueError, match="shorter than the window"):
        window_starts(100, 224)


def test_tiled_size_short_side_and_patch_multiples():
    assert tiled_size(480, 854, 224, 16) == (448, 800)        # 854 * 448/480 = 797.07 -> 50 patches of 16
    assert tiled_size(854, 480, 224, 16) == (800, 448)
    assert tiled_size(96, 96, 64, 8) == (128, 128)
    h, w = tiled_size(333, 517, 224, 14)
    assert h == 448 and w % 14 == 0 and w >= 224
    with pytest.raises(ValueError, match="multiple of patch"):
        tiled_size(100, 100, 60, 16)


def test_assemble_first_window_wins_hand_case():
    # A 3x4-token image from 2x2-token windows (patch 1 px, window 2 px): columns start 0, 2 and rows 0, 1 (edge).
    origins = window_grid(3, 4, 2)
    assert origins == [(0, 0), (0, 2), (1, 0), (1, 2)]
    tokens = torch.arange(1, 5, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 2, 2, 1)
    grid = assemble_windows(tokens, origins, (3, 4), patch=1)[..., 0]
    expected = torch.tensor([[1., 1., 2., 2.],
                             [1., 1., 2., 2.],
                             [3., 3., 4., 4.]])    # the overlapped middle row belongs to the first windows
    assert torch.equal(grid, expected)


def test_assemble_rejects_uncovered_and_misaligned():
    tokens = torch.zeros(1, 2, 2, 1)
    with pytest.raises(ValueError, match="do not cover"):
        assemble_windows(tokens, [(0, 0)], (4, 4), patch=1)
    with pytest.raises(ValueError, match="patch boundary"):
        assemble_windows(torch.zeros(1, 1, 1, 1), [(1, 0)], (2, 2), patch=2)


def test_dense_tokens_equal_per_window_forward():
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=24,
                              depth=2, num_heads=2, num_classes=0).eval()
    image = torch.rand(3, 48, 80)                           # tiled to 64 x 104 (8 x 13 tokens), windows of 32 px
    mean, std = (0.5,) * 3, (0.25,) * 3
    out = dense_tokens(model, image, [0, 1], mean=mean, std=std)
    assert out.shape == (2, 8, 13, 24)
    # Independent check: the window at (32, 72) (edge-aligned last column) supplies the bottom-right 4x4 tokens
    # except where an earlier window already covered them (columns 9-11 belong to the window at left=64).
    from vitscope.extract.dense import resize_for_tiling
    x = (resize_for_tiling(image, 32, 8) - 0.5) / 0.25
    with torch.no_grad():
        tokens = model.forward_features(x[None, :, 32:64, 72:104])[0, 1:]   # block 1 after the final norm: differs
        inter = model.forward_intermediates(x[None, :, 32:64, 72:104], indices=[1], intermediates_only=True)[0][0]
    assert torch.allclose(out[1, 4:8, 12], inter.permute(1, 2, 0)[:, 3], atol=1e-5)
    assert not torch.allclose(out[1, 4:8, 12], tokens.view(4, 4, 24)[:, 3], atol=1e-3)   # intermediates, not normed


def test_resize_mask_keeps_labels():
    mask = torch.tensor([[0, 1], [2, 2]], dtype=torch.uint8)
    big = resize_mask(mask, (4, 4))
    assert set(big.unique().tolist()) == {0, 1, 2} and big.dtype == torch.uint8
    assert torch.equal(big[:2, :2], torch.zeros(2, 2, dtype=torch.uint8))
