import pytest
import torch

from contrastkit.errors import ContrastkitError
from contrastkit.models import ProjectionHead, create_model, model_names
from contrastkit.models.small_cnn import SmallCNN

SLOW = {"resnet34", "resnet50"}  # 21M/23M parameters: ~10 s each on 2 busy cores
CASES = [
    pytest.param(name, norm, marks=[pytest.mark.slow] if name in SLOW else [])
    for name in model_names()
    for norm in (["batch", "group"] if name not in SLOW else ["batch"])
]


@pytest.mark.parametrize(("name", "norm"), CASES)
def test_every_encoder(name, norm):
    torch.manual_seed(0)
    channels = 1 if name.startswith("small_cnn") else 3
    size = 8
    model = create_model(name, in_channels=channels, image_size=size, norm=norm)
    x = torch.randn(4, channels, size, size)
    h = model.forward_features(x)
    assert h.shape == (4, model.num_features)
    assert torch.isfinite(h).all()
    h.square().mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


def test_resnet_one_channel_and_stems():
    small = create_model("resnet18", in_channels=1, image_size=32)
    assert small.net.conv1.kernel_size == (3, 3) and small.net.conv1.in_channels == 1
    assert isinstance(small.net.maxpool, torch.nn.Identity)
    assert small(torch.randn(2, 1, 16, 16)).shape == (2, 512)
    big = create_model("resnet18", in_channels=3, image_size=96)
    assert big.net.conv1.kernel_size == (7, 7)
    assert not isinstance(big.net.maxpool, torch.nn.Identity)


def test_group_norm_small_cnn_has_no_batchnorm():
    m = create_model("small_cnn", in_channels=1, norm="group")
    assert not any(isinstance(x, torch.nn.modules.batchnorm._BatchNorm) for x in m.modules())
    assert any(isinstance(x, torch.nn.GroupNorm) for x in m.modules())


def test_small_cnn_s2_is_small_cnn_with_a_strided_stem():
    base = create_model("small_cnn", in_channels=1, image_size=28)
    fast = create_model("small_cnn_s2", in_channels=1, image_size=28)
    first = fast.features[0]
    assert first.stride == (2, 2) and first.out_channels == 32
    # stage 1 has one convolution instead of two and no max-pool; stages 2 and 3 are shared
    convs = [m for m in fast.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 5 and fast.num_features == base.num_features == 128
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in fast.modules()) == 1
    tail = [tuple(m.weight.shape) for m in convs[1:]]
    assert (
        tail
        == [tuple(m.weight.shape) for m in base.modules() if isinstance(m, torch.nn.Conv2d)][2:]
    )
    for size in (7, 8, 9, 28, 32):  # stride 2 (padding 1) rounds up like the ceil-mode pool
        x = torch.randn(2, 1, size, size)
        assert fast.features[:3](x).shape[-2:] == base.features[:7](x).shape[-2:]
    assert fast(torch.randn(3, 1, 28, 28)).shape == (3, 128)
    with pytest.raises(ValueError, match=r"unknown stem .conv.*pool, stride2"):
        SmallCNN(1, 8, stem="conv")


def test_unknown_model_and_norm():
    with pytest.raises(ContrastkitError, match="unknown model 'vit'"):
        create_model("vit")
    with pytest.raises(ContrastkitError, match="unknown norm"):
        create_model("small_cnn", norm="layer")


def test_projection_head_is_unit_norm_128():
    head = ProjectionHead(64)
    z = head(torch.randn(5, 64))
    assert z.shape == (5, 128)
    assert torch.allclose(z.norm(dim=1), torch.ones(5), atol=1e-5)
