"""Label propagation (DINO's DAVIS protocol): against a float64 loop transcription of the rule, hand cases for the
neighbourhood, ties and upsampling, and a video of identical frames that must keep its first mask."""
import numpy as np
import pytest
import torch

from vitscope.kernels import propagation as prop


def _reference_step(target, sources, labels, temperature, topk, radius):
    """float64, one target token at a time: exp(cos / T) over the sources within ``radius`` (both axes) of every
    context frame, keep those >= the k-th largest, normalise, average the sources' labels."""
    target, sources, labels = (np.asarray(x, dtype=np.float64) for x in (target, sources, labels))
    h, w, _ = target.shape
    S, K1 = labels.shape[:2]
    tn = target / np.linalg.norm(target, axis=-1, keepdims=True)
    sn = sources / np.linalg.norm(sources, axis=-1, keepdims=True)
    out = np.zeros((K1, h, w))
    for i in range(h):
        for j in range(w):
            vals, labs = [], []
            for s in range(S):
                for p in range(max(0, i - radius), min(h, i + radius + 1)):
                    for q in range(max(0, j - radius), min(w, j + radius + 1)):
                        vals.append(np.exp(tn[i, j] @ sn[s, p, q] / temperature))
                        labs.append(labels[s, :, p, q])
            vals, labs = np.array(vals), np.array(labs)
            kth = np.sort(vals)[::-1][min(topk, len(vals)) - 1]
            keep = vals >= kth
            out[:, i, j] = (vals[keep, None] * labs[keep]).sum(0) / vals[keep].sum()
    return out


@pytest.mark.parametrize("topk,radius", [(5, 2), (1, 1), (3, 0), (40, 10)])
def test_step_matches_float64_reference(topk, radius):
    gen = torch.Generator().manual_seed(topk + radius)
    h, w, C, S, K1 = 5, 6, 8, 3, 3
    target = torch.randn(h, w, C, generator=gen)
    sources = torch.randn(S, h, w, C, generator=gen)
    labels = torch.softmax(torch.randn(S, K1, h, w, generator=gen), dim=1)
    got = prop.propagation_step(target[None], sources[None], labels[None], temperature=0.1, topk=topk, radius=radius)
    want = _reference_step(target.numpy(), sources.numpy(), labels.numpy(), 0.1, topk, radius)
    assert got.shape == (1, K1, h, w)
    np.testing.assert_allclose(got[0].double().numpy(), want, atol=2e-5)


def test_neighbourhood_counts_by_hand():
    allowed = prop.neighbourhood((3, 4), 1)
    counts = allowed.sum(1).reshape(3, 4)
    assert counts.tolist() == [[4, 6, 6, 4], [6, 9, 9, 6], [4, 6, 6, 4]]
    assert torch.equal(allowed, allowed.T)
    assert bool(prop.neighbourhood((3, 4), None).all())
    assert prop.neighbourhood((3, 4), 0).sum() == 12          # only itself


def test_weights_keep_ties_at_the_kth_value_and_sum_to_one():
    target = torch.tensor([[1.0, 0.0]])
    sources = torch.tensor([[[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]]])    # two sources equally close (cos 1)
    w = prop.propagation_weights(target, sources, None, temperature=0.1, topk=1)
    assert w.tolist() == [[0.5, 0.5, 0.0]]
    w = prop.propagation_weights(target, sources, None, temperature=0.1, topk=3)
    e = np.exp([10.0, 10.0, 0.0])
    np.testing.assert_allclose(w[0].numpy(), e / e.sum(), rtol=1e-6)


def test_identical_frames_propagate_the_first_mask_exactly():
    gen = torch.Generator().manual_seed(0)
    h, w, C, patch = 6, 8, 32, 4
    mask_tokens = torch.zeros(h, w, dtype=torch.long)
    mask_tokens[1:4, 2:5], mask_tokens[4:, 6:] = 1, 2
    # straight edges only: bilinear upsampling rounds a mask's corners, so only these come back pixel-exact
    stripes = torch.tensor([0, 0, 1, 1, 1, 2, 2, 0]).expand(h, w)
    first = prop.one_hot_labels(mask_tokens, 3)
    frame = torch.randn(2, h, w, C, generator=gen)                   # B = 2 feature sets (two blocks)
    # topk = 1: each token's best source is itself (cos 1) in every context frame, so the labels stay one-hot.
    soft = list(prop.propagate_video([frame] * 10, first, n_last_frames=3, topk=1, radius=2))
    assert len(soft) == 10
    for s in soft:
        assert torch.equal(s, first.expand(2, 3, h, w))
    # the DINO defaults: soft labels, but their argmax is the first mask (and, for straight edges, the first
    # annotation at pixel resolution)
    for s in prop.propagate_video([frame] * 10, first):
        assert torch.equal(s.argmax(1), mask_tokens.expand(2, h, w))
    pixels = stripes.repeat_interleave(patch, 0).repeat_interleave(patch, 1)
    for s in prop.propagate_video([frame] * 10, prop.one_hot_labels(stripes, 3)):
        assert torch.equal(prop.labels_to_mask(s[1], patch, (h * patch, w * patch)), pixels)


def test_context_is_first_frame_plus_the_last_n():
    # A 1 x 2 grid; frame 0: background token e0, object token e1. Frame 1's tokens lean towards frame 0's (so they
    # get its labels) with features of their own; frame 2's first token is closest to frame 1's background token but,
    # among frame 0's tokens alone, closest to the object token: its label tells which frames were the context.
    e = torch.eye(4)
    frames = [torch.stack([e[0], e[1]]), torch.stack([e[0] + 0.5 * e[2], e[1] + 0.5 * e[3]]),
              torch.stack([e[1] + 3 * e[2], e[0]])]
    frames = [f.view(1, 1, 2, 4) for f in frames]
    first = prop.one_hot_labels(torch.tensor([[0, 1]]), 2)
    only_first = list(prop.propagate_video(frames, first, n_last_frames=0, topk=1))
    with_previous = list(prop.propagate_video(frames, first, n_last_frames=1, topk=1))
    assert torch.equal(with_previous[1], only_first[1]) and torch.equal(only_first[1][0], first)
    assert only_first[2][0, :, 0, 0].tolist() == [0.0, 1.0]          # from frame 0's object token
    assert with_previous[2][0, :, 0, 0].tolist() == [1.0, 0.0]       # from frame 1's background token
    with pytest.raises(ValueError, match="n_last_frames"):
        next(prop.propagate_video(frames, first, n_last_frames=-1))


def test_labels_to_mask_resizes_to_the_frame_and_rejects_bad_shapes():
    soft = torch.zeros(2, 2, 3)
    soft[1, :, 2] = 1.0
    soft[0] = 1 - soft[1]
    mask = prop.labels_to_mask(soft, 8, (32, 48))          # 16 x 24 after upsampling, then nearest to 32 x 48
    assert mask.shape == (32, 48) and mask[:, 40:].eq(1).all() and mask[:, :24].eq(0).all()
    with pytest.raises(ValueError, match="K1, h, w"):
        prop.labels_to_mask(soft[0], 8, (16, 24))


@pytest.mark.reliability("bad input", "propagation kernels reject mismatched shapes and a bad top-k or temperature")
def test_bad_inputs_are_named():
    t, s, lab = torch.randn(1, 2, 2, 4), torch.randn(1, 2, 2, 2, 4), torch.rand(1, 2, 3, 2, 2)
    with pytest.raises(ValueError, match="topk"):
        prop.propagation_step(t, s, lab, topk=0)
    with pytest.raises(ValueError, match="temperature"):
        prop.propagation_step(t, s, lab, temperature=0)
    with pytest.raises(ValueError, match="source_labels"):
        prop.propagation_step(t, s, lab[:, :1])
    with pytest.raises(ValueError, match="NaN"):
        prop.propagation_step(t * float("nan"), s, lab)
