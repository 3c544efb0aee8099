"""Batched, generator-driven image augmentations for zoo training (float images in [0, 1], [B, 3, H, W]).

Every random number is drawn from an explicit CPU ``torch.Generator`` (then moved to the images' device), so a
training step's views depend only on that step's generator: runs are reproducible and resumable. The ops follow
torchvision / DINO / MoCo-v3 recipes, written for a whole batch at once (per-sample parameters) because per-image
PIL transforms would dominate the step time on two CPU cores.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def _coin(n: int, p: float, gen: torch.Generator) -> Tensor:
    return torch.rand(n, generator=gen) < p


def random_resized_crop(x: Tensor, out_size: int, gen: torch.Generator, scale=(0.08, 1.0),
                        ratio=(3 / 4, 4 / 3), flip_p: float = 0.5) -> Tensor:
    """Per-sample random crop (area fraction in ``scale``, aspect ratio log-uniform in ``ratio``) resized to
    ``out_size`` (bilinear), with a horizontal flip of probability ``flip_p``. [B,3,H,W] -> [B,3,out,out]."""
    B = x.shape[0]
    area = _uniform(B, *scale, gen)
    logr = _uniform(B, math.log(ratio[0]), math.log(ratio[1]), gen)
    w = (area * logr.exp()).sqrt().clamp(max=1.0)           # crop width / image width
    h = (area / logr.exp()).sqrt().clamp(max=1.0)
    cx = (torch.rand(B, generator=gen) * 2 - 1) * (1 - w)    # centre in [-1, 1] keeping the crop inside
    cy = (torch.rand(B, generator=gen) * 2 - 1) * (1 - h)
    flip = torch.where(_coin(B, flip_p, gen), -1.0, 1.0)
    theta = torch.zeros(B, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    grid = F.affine_grid(theta.to(x), [B, 3, out_size, out_size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _gray(x: Tensor) -> Tensor:
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _blend(a: Tensor, b: Tensor, f: Tensor) -> Tensor:
    """f*a + (1-f)*b with per-sample factor f [B], clamped to [0, 1] as torchvision's adjust_* functions do."""
    f = f.view(-1, 1, 1, 1).to(a)
    return (f * a + (1 - f) * b).clamp(0, 1)


def _hue_rotate(x: Tensor, angle: Tensor) -> Tensor:
    """Rotate hue by ``angle`` radians [B] in YIQ space (a cheap stand-in for torchvision's HSV hue shift)."""
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    c, s = angle.cos(), angle.sin()
    rot = torch.zeros(angle.shape[0], 3, 3)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = c, -s, s, c
    m = torch.linalg.inv(to_yiq) @ rot @ to_yiq                  # [B, 3, 3]
    return torch.einsum("bij,bjhw->bihw", m.to(x), x).clamp(0, 1)


def color_jitter(x: Tensor, gen: torch.Generator, p: float = 0.8, brightness: float = 0.4,
                 contrast: float = 0.4, saturation: float = 0.2, hue: float = 0.1) -> Tensor:
    """With probability ``p`` per sample: brightness, contrast, saturation and hue jitter (fixed order;
    torchvision shuffles it). Factors are uniform in [1-a, 1+a]; the hue shift in [-hue, hue] turns."""
    B = x.shape[0]
    on = _coin(B, p, gen)
    fb, fc = _uniform(B, 1 - brightness, 1 + brightness, gen), _uniform(B, 1 - contrast, 1 + contrast, gen)
    fs, fh = _uniform(B, 1 - saturation, 1 + saturation, gen), _uniform(B, -hue, hue, gen) * 2 * math.pi
    one = torch.ones(B)
    fb, fc, fs = torch.where(on, fb, one), torch.where(on, fc, one), torch.where(on, fs, one)
    fh = torch.where(on, fh, torch.zeros(B))
    x = _blend(x, torch.zeros_like(x), fb)
    x = _blend(x, _gray(x).mean((1, 2, 3), keepdim=True).expand_as(x), fc)
    x = _blend(x, _gray(x).expand_as(x), fs)
    return _hue_rotate(x, fh)


def random_grayscale(x: Tensor, gen: torch.Generator, p: float = 0.2) -> Tensor:
    """Replace a sample by its luma (3 equal channels) with probability ``p``."""
    on = _coin(x.shape[0], p, gen).view(-1, 1, 1, 1).to(x.device)
    return torch.where(on, _gray(x).expand_as(x), x)


def gaussian_blur(x: Tensor, gen: torch.Generator, p: float = 0.5, sigma=(0.1, 1.0), kernel: int = 5) -> Tensor:
    """"Blur-lite": with probability ``p`` a Gaussian blur of per-sample sigma (uniform in ``sigma``, in pixels;
    DINO uses sigma 0.1-2 on 224 px images, so we scale it down for 64 px) with a ``kernel``-tap separable filter."""
    B, C, H, W = x.shape
    on = _coin(B, p, gen)
    s = _uniform(B, *sigma, gen)
    t = torch.arange(kernel) - kernel // 2
    k = torch.exp(-(t[None] ** 2) / (2 * s[:, None] ** 2))
    k = k / k.sum(1, keepdim=True)
    k = torch.where(on[:, None], k, (t == 0).float()[None].expand(B, -1))   # identity kernel when off
    k = k.repeat_interleave(C, 0).to(x)                                   # [B*C, kernel]
    y = x.reshape(1, B * C, H, W)
    pad = kernel // 2
    y = F.conv2d(F.pad(y, (pad, pad, 0, 0), mode="reflect"), k.view(B * C, 1, 1, kernel), groups=B * C)
    y = F.conv2d(F.pad(y, (0, 0, pad, pad), mode="reflect"), k.view(B * C, 1, kernel, 1), groups=B * C)
    return y.view(B, C, H, W)


def solarize(x: Tensor, gen: torch.Generator, p: float = 0.2, threshold: float = 0.5) -> Tensor:
    """With probability ``p`` invert pixels above ``threshold``."""
    on = _coin(x.shape[0], p, gen).view(-1, 1, 1, 1).to(x.device)
    return torch.where(on & (x >= threshold), 1 - x, x)


def background_swap(x: Tensor, masks: Tensor | None, gen: torch.Generator, p: float) -> Tensor:
    """With probability ``p`` per sample, replace the background (mask 0) by another sample of the batch (a
    random derangement), objects of that sample included. The synthetic stand-in for saliency-based background
    augmentation (BG_Swap, Ryali et al. 2021): each view draws its own partner, so two views of one scene share
    the object but not the background. x: [B, 3, H, W]; masks: [B, H, W] (None or p=0: no-op)."""
    B = x.shape[0]
    if masks is None or p <= 0 or B < 2:
        return x
    partner = (torch.arange(B) + torch.randint(1, B, (B,), generator=gen)) % B      # never the sample itself
    on = _coin(B, p, gen).view(-1, 1, 1, 1).to(x.device)
    background = (masks == 0).unsqueeze(1).to(x.device)
    return torch.where(on & background, x[partner.to(x.device)], x)


def object_frame(x: Tensor, masks: Tensor, gen: torch.Generator, out_size: int, context=(1.3, 2.5)) -> Tensor:
    """Re-frame each scene around its object: a square of side ``context`` x the object's bounding-box side
    (uniform per sample), centred on the box, resized to ``out_size`` (reflection outside the image). Zoo SSL
    training uses it so the object, not the background photo, fills most of each view. [B,3,H,W] -> [B,3,o,o]."""
    B, _, H, W = x.shape
    obj = (masks > 0).cpu()
    rows, cols = obj.any(2), obj.any(1)                                  # [B, H], [B, W]
    idx_h, idx_w = torch.arange(H).float(), torch.arange(W).float()
    big = torch.tensor(1e9)
    top = torch.where(rows, idx_h, big).amin(1)
    bottom = torch.where(rows, idx_h, -big).amax(1) + 1
    left = torch.where(cols, idx_w, big).amin(1)
    right = torch.where(cols, idx_w, -big).amax(1) + 1
    empty = ~rows.any(1)                                                  # no object: keep the whole frame
    top, left = torch.where(empty, 0.0, top), torch.where(empty, 0.0, left)
    bottom, right = torch.where(empty, float(H), bottom), torch.where(empty, float(W), right)
    side = torch.maximum(bottom - top, right - left) * _uniform(B, *context, gen)
    cy, cx = (top + bottom) / H - 1, (left + right) / W - 1                # centre in [-1, 1]
    theta = torch.zeros(B, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = (side / W).clamp(max=1.0), cx
    theta[:, 1, 1], theta[:, 1, 2] = (side / H).clamp(max=1.0), cy
    grid = F.affine_grid(theta.to(x), [B, 3, out_size, out_size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def ssl_view(x: Tensor, gen: torch.Generator, out_size: int, scale, blur_p: float = 0.5,
             solarize_p: float = 0.0, masks: Tensor | None = None, bg_swap_p: float = 0.0,
             hue: float = 0.1, object_centric: bool = False) -> Tensor:
    """One BYOL/DINO/MoCo-v3-style view: (background swap, object framing,) crop+flip, colour jitter (p=0.8),
    grayscale (p=0.2), blur, solarize."""
    v = background_swap(x, masks, gen, bg_swap_p)
    if object_centric and masks is not None:
        v = object_frame(v, masks, gen, x.shape[-1])
    v = random_resized_crop(v, out_size, gen, scale=scale)
    v = color_jitter(v, gen, hue=hue)
    v = random_grayscale(v, gen)
    v = gaussian_blur(v, gen, p=blur_p)
    return solarize(v, gen, p=solarize_p)


def multi_crop(x: Tensor, gen: torch.Generator, n_local: int = 4, global_size: int = 64, local_size: int = 32,
               global_scale=(0.4, 1.0), local_scale=(0.1, 0.4), **view_kw) -> list[Tensor]:
    """DINO multi-crop: 2 global views (blur p=1.0 and p=0.1 + solarize p=0.2, as DINO's DataAugmentationDINO)
    then ``n_local`` local views (blur p=0.5); ``view_kw`` go to every :func:`ssl_view`. Returns a list of
    [B, 3, s, s] tensors, globals first."""
    views = [ssl_view(x, gen, global_size, global_scale, blur_p=1.0, **view_kw),
             ssl_view(x, gen, global_size, global_scale, blur_p=0.1, solarize_p=0.2, **view_kw)]
    views += [ssl_view(x, gen, local_size, local_scale, blur_p=0.5, **view_kw) for _ in range(n_local)]
    return views
