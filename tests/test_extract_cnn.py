"""extract.cnn_capture: CNN block outputs as tokens, fed to the same Gram product as ViT blocks; zoo CNN loading."""
from __future__ import annotations

import pytest
import timm
import torch

from vitscope.data import ImageFolderSubset, eval_transform
from vitscope.extract import FeatureStore, GramMatrices, PooledTokens, extract, stack_batches
from vitscope.extract.cnn_capture import CnnCapture, capture_for, cnn_geometry, is_cnn, stage_rows
from vitscope.kernels import cka as cka_k
from vitscope.models import CheckpointMismatchError, Preprocess, create_model, load_model

RESNET = dict(layers=(1, 2, 1, 1), channels=(8, 16, 24, 32), num_classes=0)


@pytest.fixture
def dataset(synthetic_root, manifest):
    pre = Preprocess(mean=(0.5,) * 3, std=(0.5,) * 3, resize=32, crop=32)
    return ImageFolderSubset(synthetic_root, manifest, eval_transform(pre), per_class=6, num_classes=5)   # 30


@pytest.fixture
def tiny_resnet():
    torch.manual_seed(0)
    return timm.create_model("resnet18", **RESNET).eval()


def test_geometry_and_stage_rows(tiny_resnet, tiny_vit):
    g = cnn_geometry(tiny_resnet)
    assert g["depth"] == 5 and g["n_prefix"] == 0 and g["stage_ends"] == (0, 2, 3, 4) and g["embed_dim"] == 32
    assert is_cnn(tiny_resnet) and not is_cnn(tiny_vit)
    convnext = timm.create_model("convnextv2_base", depths=(1, 1, 2, 1), dims=(8, 16, 24, 32), num_classes=0)
    assert cnn_geometry(convnext)["depth"] == 5 and cnn_geometry(convnext)["stage_ends"] == (0, 1, 3, 4)


def test_block_tokens_are_the_block_outputs_and_stage_rows_the_stage_outputs(tiny_resnet):
    x = torch.randn(3, 3, 32, 32)
    stages = {}
    handles = [getattr(tiny_resnet, f"layer{i}").register_forward_hook(
        lambda m, i_, o, i=i: stages.__setitem__(i, o)) for i in range(1, 5)]
    with torch.no_grad(), CnnCapture(tiny_resnet, {"block"}) as cap:
        tiny_resnet.forward_features(x)
        blocks = cap.collect()["block"]
    for h in handles:
        h.remove()
    # by hand: run the blocks one after another from the stem
    with torch.no_grad():
        h = tiny_resnet.maxpool(tiny_resnet.act1(tiny_resnet.bn1(tiny_resnet.conv1(x))))
        manual = []
        for layer in (tiny_resnet.layer1, tiny_resnet.layer2, tiny_resnet.layer3, tiny_resnet.layer4):
            for block in layer:
                h = block(h)
                manual.append(h)
    assert len(blocks) == 5
    for got, want in zip(blocks, manual):
        B, C, H, W = want.shape
        assert got.shape == (B, H * W, C)
        torch.testing.assert_close(got, want.flatten(2).transpose(1, 2))
    for stage, row in zip(range(1, 5), stage_rows(cnn_geometry(tiny_resnet))):
        torch.testing.assert_close(blocks[row], stages[stage].flatten(2).transpose(1, 2))


def test_cnn_grams_enter_minibatch_cka_like_vit_blocks(tiny_resnet, tiny_vit, dataset, tmp_path):
    store = FeatureStore(tmp_path)
    cnn = extract(tiny_resnet, {"name": "cnn"}, dataset, {"g": GramMatrices(tokens="all"), "m": GramMatrices(
        tokens="mean")}, transform_id={"resize": 32}, store=store, batch_size=8, progress=False)
    vit = extract(tiny_vit, {"name": "vit"}, dataset, {"g": GramMatrices(tokens="all")}, transform_id={"resize": 32},
                  store=store, batch_size=8, progress=False)
    assert torch.equal(cnn["_meta"]["order"], vit["_meta"]["order"])      # the same images in the same batches
    order = cnn["_meta"]["order"].tolist()
    images = torch.stack([dataset[i][0] for i in order[:8]])
    with torch.no_grad(), CnnCapture(tiny_resnet, {"block"}) as cap:
        tiny_resnet.forward_features(images)
        blocks = cap.collect()["block"]
    first = stack_batches(cnn["g"])[0]
    # reference: the float64 Gram of each image's flattened block output, and of its global average pool
    for i, b in enumerate(blocks):
        flat = b.reshape(8, -1).double()
        torch.testing.assert_close(first[i], flat @ flat.T, rtol=1e-4, atol=1e-4)
        gap = b.mean(1).double()
        torch.testing.assert_close(stack_batches(cnn["m"])[0][i], gap @ gap.T, rtol=1e-4, atol=1e-5)
    matrix = cka_k.minibatch_cka_from_grams(stack_batches(vit["g"]), stack_batches(cnn["g"]))
    assert matrix.shape == (3, 5) and bool(((matrix > -0.2) & (matrix <= 1.0 + 1e-9)).all())


def test_cnn_refuses_cls_tokens_and_vit_sites(tiny_resnet, dataset, tmp_path):
    with pytest.raises(ValueError, match="no CLS token"):
        capture_for(tiny_resnet, [GramMatrices(tokens="cls")])
    with pytest.raises(ValueError, match="does not have"):
        extract(tiny_resnet, {"name": "cnn"}, dataset, {"p": PooledTokens(site="norm1")}, transform_id={},
                store=FeatureStore(tmp_path), batch_size=8, progress=False)


def test_zoo_cnn_entry_builds_and_loads_its_own_layout(tmp_path):
    from safetensors.torch import save_file

    src = create_model("random-cnn-a")
    assert is_cnn(src) and src.num_features == 192
    path = tmp_path / "zoo-cnn-mocov3.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    loaded = load_model("zoo-cnn-mocov3", weights=path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.forward_features(x), src.eval().forward_features(x))


def test_resnet_checkpoint_in_the_wrong_layout_names_the_keys(tmp_path):
    """A DINO ResNet-50 file given to the MoCo-v3 entry (no ``module.base_encoder.``) and a MoCo-v3 file whose
    trunk lost a block: both refused, naming the layout or the keys."""
    src = create_model("resnet50-mocov3", layers=(1, 1, 1, 1))
    dino_layout = tmp_path / "dino.pth"
    torch.save(src.state_dict(), dino_layout)
    with pytest.raises(CheckpointMismatchError, match="module.base_encoder."):
        load_model("resnet50-mocov3", weights=dino_layout, layers=(1, 1, 1, 1))
    sd = {f"module.base_encoder.{k}": v for k, v in src.state_dict().items() if not k.startswith("layer4.0.conv3")}
    broken = tmp_path / "moco.pth.tar"
    torch.save({"state_dict": sd}, broken)
    with pytest.raises(CheckpointMismatchError, match=r"missing keys: layer4\.0\.conv3\.weight"):
        load_model("resnet50-mocov3", weights=broken, layers=(1, 1, 1, 1))


def test_zoo_cnn_backbone_reads_its_global_average_pool():
    from vitscope.zoo.cnn import GapTokens, create_cnn_backbone
    from vitscope.zoo.objectives.common import cls_token

    torch.manual_seed(0)
    cnn = create_cnn_backbone().eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        gap = cnn.forward_features(x).mean(dim=(2, 3))
        torch.testing.assert_close(cls_token(cnn, x), gap)
        tokens = GapTokens(cnn).forward_features(x)
        torch.testing.assert_close(tokens[:, 0], gap)
        torch.testing.assert_close(tokens[:, 1:].mean(1), gap)
