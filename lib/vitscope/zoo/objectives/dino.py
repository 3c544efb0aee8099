"""Self-distillation with no labels (DINO, Caron et al. 2021), scaled down to 64 px scenes.

Multi-crop (2 global 64 px views + ``N_LOCAL`` local 32 px views); the student sees all views, the EMA teacher
only the globals. Both end in DINO's head: a 3-layer MLP to a ``BOTTLENECK``-d L2-normalised code, then a
weight-normalised linear layer to ``K`` prototypes (its norm fixed to 1, frozen for the first ``FREEZE_LAST``
fraction of training). The teacher's output is centred (running mean, ``CENTER_MOMENTUM``) and sharpened
(``TEACHER_TEMP``); the loss is the cross-entropy between each teacher global view and every *other* student view.
The teacher momentum follows a cosine from ``MOMENTUM`` to 1 (DINO uses 0.996 for 300 epochs; our runs are a few
hundred steps, so the teacher must move faster).

Options for our scenes (``OBJECT_CENTRIC``, ``BG_SWAP_P``, ``HUE``, ``RAMP``), as used by ``mocov3.py`` here, are
OFF in the shipped model. DINO has not learned within its CPU budget in any variant tried (held-out k-NN on
generator v2, random init 0.042): the shipped plain recipe, 900 steps at lr 1e-4, 0.044 (at lr 3e-4 the monitor
looked the same); the options plus a sharper teacher (``TEACHER_TEMP`` 0.02, the DINO authors' advice against
uniform collapse), monitor k-NN 0.030-0.044 through step 800. The loss dips in warm-up, rises towards ln K and then
falls only slowly: self-distillation from scratch needs far more steps than a CPU hour gives (see the model card).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import augment
from ..data import normalize
from .common import EMBED_DIM, Objective, cls_token, cosine_to_one, ema_update, frozen_copy, mlp, ramped_view_kw

N_LOCAL = 4
GLOBAL_SIZE, LOCAL_SIZE = 64, 32
GLOBAL_SCALE, LOCAL_SCALE = (0.4, 1.0), (0.1, 0.4)
HIDDEN, BOTTLENECK, K = 512, 128, 1024
STUDENT_TEMP, TEACHER_TEMP = 0.1, 0.04
CENTER_MOMENTUM = 0.9
MOMENTUM = 0.99
FREEZE_LAST = 0.05
NORM_LAST_LAYER = True
OBJECT_CENTRIC = False        # options (see above), off: plain DINO augmentations
BG_SWAP_P = 0.0
HUE = 0.1                     # DINO's hue jitter range in turns
HUE_START = 0.1
RAMP = 0.5
HEAD_BN = False


class DINOHead(nn.Module):
    """[B, D] -> [B, K] prototype logits: MLP -> L2 norm -> weight-normed linear (norm fixed to 1)."""

    def __init__(self):
        super().__init__()
        self.mlp = mlp([EMBED_DIM, HIDDEN, HIDDEN, BOTTLENECK], bn=HEAD_BN)
        self.last = nn.utils.parametrizations.weight_norm(nn.Linear(BOTTLENECK, K, bias=False))
        self.last.parametrizations.weight.original0.data.fill_(1.0)
        self.last.parametrizations.weight.original0.requires_grad_(not NORM_LAST_LAYER)

    def forward(self, x):
        return self.last(F.normalize(self.mlp(x), dim=-1))


class DINO(Objective):
    name = "dino"
    family = "self-distillation"
    HPARAMS = dict(n_global=2, n_local=N_LOCAL, global_size=GLOBAL_SIZE, local_size=LOCAL_SIZE,
                   global_scale=GLOBAL_SCALE, local_scale=LOCAL_SCALE, head_hidden=HIDDEN, bottleneck=BOTTLENECK,
                   prototypes=K, student_temp=STUDENT_TEMP, teacher_temp=TEACHER_TEMP,
                   center_momentum=CENTER_MOMENTUM, teacher_momentum=f"cosine {MOMENTUM} -> 1",
                   freeze_last_layer_fraction=FREEZE_LAST, norm_last_layer=NORM_LAST_LAYER, head_bn=HEAD_BN,
                   background_swap_p=BG_SWAP_P, hue_jitter=HUE,
                   object_centric=OBJECT_CENTRIC, curriculum_ramp=RAMP, hue_start=HUE_START)

    def __init__(self, backbone, data_meta=None):
        super().__init__(backbone, data_meta)
        self.head = DINOHead()
        self.teacher = nn.ModuleList([frozen_copy(backbone), frozen_copy(self.head)])
        self.register_buffer("center", torch.zeros(1, K))

    def _student(self, views):
        # Views of one size share a forward pass (DINO's MultiCropWrapper groups by resolution).
        out = []
        for size in dict.fromkeys(v.shape[-1] for v in views):
            group = torch.cat([v for v in views if v.shape[-1] == size])
            out.append(self.head(cls_token(self.backbone, normalize(group))))
        return torch.cat(out).chunk(len(views))

    def loss(self, images, labels, attrs, gen, progress, masks=None):
        # DINO freezes the prototypes early on (its first epoch): a random last layer would chase a moving target.
        self.head.last.parametrizations.weight.original1.requires_grad_(progress >= FREEZE_LAST)
        views = augment.multi_crop(images, gen, n_local=N_LOCAL, global_size=GLOBAL_SIZE, local_size=LOCAL_SIZE,
                                   global_scale=GLOBAL_SCALE, local_scale=LOCAL_SCALE, masks=masks,
                                   object_centric=OBJECT_CENTRIC,
                                   **ramped_view_kw(progress, BG_SWAP_P, HUE, HUE_START, RAMP))
        student = self._student(views)
        with torch.no_grad():
            t_bb, t_head = self.teacher
            t_out = t_head(cls_token(t_bb, normalize(torch.cat(views[:2]))))
            teacher = F.softmax((t_out - self.center) / TEACHER_TEMP, dim=-1).chunk(2)
        total, n = 0.0, 0
        for i, t in enumerate(teacher):
            for j, s in enumerate(student):
                if i == j:      # never match a view with itself
                    continue
                total = total + torch.sum(-t * F.log_softmax(s / STUDENT_TEMP, dim=-1), dim=-1).mean()
                n += 1
        self._last_teacher_mean = t_out.mean(0, keepdim=True)
        return total / n

    def after_step(self, progress):
        with torch.no_grad():
            self.center.mul_(CENTER_MOMENTUM).add_(self._last_teacher_mean, alpha=1 - CENTER_MOMENTUM)
        ema_update(self.teacher, nn.ModuleList([self.backbone, self.head]), cosine_to_one(MOMENTUM, progress))
