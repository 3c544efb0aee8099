"""ViTDet Mask R-CNN (OM App. C): the pyramid's geometry, training, freezing, determinism and the COCO AP plumbing."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO

from vitscope.data.coco import CocoInstances
from vitscope.data.twins.coco import write_coco_twin
from vitscope.detection import QUICK, make_detector, train_detector
from vitscope.detection.evaluate import area_ranges, bootstrap_counts, evaluate, match_tables, resampled_ap, summary
from vitscope.detection.train import InstanceTargets, lr_at
from vitscope.detection.vitdet import SimpleFeaturePyramid

MODEL = "random-a"     # the zoo's ViT (6 blocks, width 192, 8 px patches), no weights file needed


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    root = write_coco_twin(tmp_path_factory.mktemp("coco"), 6, 48, 5, split="train2017")
    return CocoInstances(root, "train2017")


def test_pyramid_strides_and_channels():
    fpn = SimpleFeaturePyramid(32, 8)
    out = fpn(torch.randn(2, 32, 6, 6))      # a 6x6 token map at stride p: levels at p/4, p/2, p, 2p, 4p
    assert [tuple(v.shape) for v in out.values()] == [(2, 8, 24, 24), (2, 8, 12, 12), (2, 8, 6, 6), (2, 8, 3, 3),
                                                      (2, 8, 2, 2)]


def test_detector_builds_and_predicts(twin):
    det = make_detector(MODEL, "frozen", len(twin.classes), QUICK)
    assert det.backbone.out_channels == QUICK.channels
    det.eval()
    with torch.no_grad():
        out = det([torch.rand(3, 48, 48)])
    assert set(out[0]) == {"boxes", "labels", "scores", "masks"}
    assert out[0]["masks"].shape[-2:] == (48, 48)    # mapped back to the input's size


def _batch(twin, n=2):
    data = InstanceTargets(twin)
    items = [data[i] for i in range(n)]
    return [x for x, _ in items], [t for _, t in items]


def _loss(det, images, targets):
    torch.manual_seed(0)     # proposal and RoI sampling draw from the global generator
    return sum(det(images, targets).values())


def test_training_steps_reduce_the_loss(twin):
    det = make_detector(MODEL, "finetuned", len(twin.classes), QUICK)
    det.train()
    images, targets = _batch(twin)
    opt = torch.optim.AdamW([p for p in det.parameters() if p.requires_grad], lr=1e-3)
    before = _loss(det, images, targets).item()
    for _ in range(3):
        loss = _loss(det, images, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert _loss(det, images, targets).item() < before


def test_frozen_backbone_is_unchanged_bit_for_bit(twin):
    det = make_detector(MODEL, "frozen", len(twin.classes), QUICK)
    body0 = {k: v.clone() for k, v in det.backbone.body.state_dict().items()}
    pyr0 = {k: v.clone() for k, v in det.backbone.pyramid.state_dict().items()}
    train_detector(det, InstanceTargets(twin, QUICK, 0, train=True), QUICK, progress=False, max_steps=2)
    assert all(torch.equal(body0[k], v) for k, v in det.backbone.body.state_dict().items())
    assert any(not torch.equal(pyr0[k], v) for k, v in det.backbone.pyramid.state_dict().items())
    assert not any(p.requires_grad for p in det.backbone.body.parameters())
    det.train()
    assert not det.backbone.body.training       # frozen: eval-mode norms and no drop path even in training


def test_finetuned_backbone_moves(twin):
    det = make_detector(MODEL, "finetuned", len(twin.classes), QUICK)
    w0 = det.backbone.body.blocks[0].attn.qkv.weight.clone()
    train_detector(det, InstanceTargets(twin, QUICK, 0, train=True), QUICK, progress=False, max_steps=2)
    assert not torch.equal(w0, det.backbone.body.blocks[0].attn.qkv.weight)


def test_training_is_deterministic(twin):
    states = []
    for _ in range(2):
        det = make_detector(MODEL, "finetuned", len(twin.classes), QUICK)
        train_detector(det, InstanceTargets(twin, QUICK, 0, train=True), QUICK, progress=False, max_steps=2)
        states.append(det.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_lr_schedule_hand_values():
    from dataclasses import replace
    r = replace(QUICK, lr=1.0, warmup_iters=10, lr_steps=(0.5, 0.75))
    assert lr_at(0, 100, r) == pytest.approx(0.001)
    assert lr_at(10, 100, r) == pytest.approx(1.0)
    assert lr_at(50, 100, r) == pytest.approx(0.1)
    assert lr_at(80, 100, r) == pytest.approx(0.01)


# ---------------------------------------------------------------- AP plumbing
def _gt() -> COCO:
    """Two 40x40 images: image 1 holds a square of category 1 and one of category 2, image 2 one of category 1."""
    from pycocotools import mask as mask_utils

    anns, k = [], 0
    for image_id, cat, (x, y, s) in ((1, 1, (2, 2, 12)), (1, 2, (20, 20, 16)), (2, 1, (10, 5, 20))):
        m = np.zeros((40, 40), np.uint8)
        m[y:y + s, x:x + s] = 1
        rle = mask_utils.encode(np.asfortranarray(m))
        k += 1
        anns.append({"id": k, "image_id": image_id, "category_id": cat, "bbox": [x, y, s, s], "area": float(s * s),
                     "iscrowd": 0, "segmentation": {"size": [40, 40], "counts": rle["counts"].decode()}})
    coco = COCO()
    coco.dataset = {"images": [{"id": i, "width": 40, "height": 40, "file_name": f"{i}.jpg"} for i in (1, 2)],
                    "annotations": anns, "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    coco.createIndex()
    return coco


def _as_results(coco, dx=0.0, score=0.9):
    out = []
    for a in coco.dataset["annotations"]:
        x, y, w, h = a["bbox"]
        out.append({"image_id": a["image_id"], "category_id": a["category_id"], "bbox": [x + dx, y, w, h],
                    "score": score, "segmentation": a["segmentation"]})
    return out


def test_ground_truth_as_predictions_scores_ap_one():
    coco = _gt()
    s = summary(coco, _as_results(coco))
    assert s["box"]["AP"] == pytest.approx(100.0) and s["mask"]["AP"] == pytest.approx(100.0)
    assert s["box"]["AP50"] == pytest.approx(100.0) and s["box"]["AP75"] == pytest.approx(100.0)
    assert np.isnan(s["box"]["AP_large"])        # no object above 96² px² in COCO's ranges


def test_shifted_boxes_score_less():
    coco = _gt()
    exact, shifted = summary(coco, _as_results(coco))["box"], summary(coco, _as_results(coco, dx=3.0))["box"]
    assert shifted["AP"] < exact["AP"]
    assert shifted["AP50"] == pytest.approx(100.0)    # a 3 px shift keeps IoU >= 0.5 for 12-20 px squares
    assert summary(coco, [])["box"]["AP"] == 0.0


def test_resampled_ap_with_every_image_once_equals_cocoeval():
    coco = _gt()
    rng = np.random.default_rng(0)
    results = []
    for r in _as_results(coco):     # jittered boxes, extra false positives, varied scores
        results.append({**r, "bbox": [v + rng.normal(0, 1.5) for v in r["bbox"]], "score": float(rng.random())})
        results.append({**r, "bbox": [5.0, 25.0, 10.0, 10.0], "score": float(rng.random())})
    for iou_type in ("bbox", "segm"):
        ev = evaluate(coco, results, iou_type)
        ap = resampled_ap(match_tables(ev), np.ones((1, 2)))
        assert ap[0] == pytest.approx(ev.stats[0], abs=1e-12)
        # image 2 drawn twice: the same as COCOeval on a data set where image 2 appears twice
        twice = resampled_ap(match_tables(ev), np.array([[0, 2]]))
        alone = evaluate(coco, [r for r in results if r["image_id"] == 2], iou_type, img_ids=[2])
        assert twice[0] == pytest.approx(alone.stats[0], abs=1e-12)


def test_bootstrap_counts_sum_to_n_and_tercile_ranges():
    c = bootstrap_counts(5, 7, 0)
    assert c.shape == (7, 5) and (c.sum(1) == 5).all()
    coco = _gt()
    r = area_ranges(coco, [1, 2], "terciles")
    assert r[0] == [0, 1e10] and r[1][1] == pytest.approx(np.quantile([144, 256, 400], 1 / 3))
