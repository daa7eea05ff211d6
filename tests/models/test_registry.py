import pytest
import torch

from contrastkit.errors import ContrastkitError
from contrastkit.models import ProjectionHead, create_model, model_names

SLOW = {"resnet34", "resnet50"}  # 21M/23M parameters: ~10 s each on 2 busy cores
CASES = [
    pytest.param(name, norm, marks=[pytest.mark.slow] if name in SLOW else [])
    for name in model_names()
    for norm in (["batch", "group"] if name not in SLOW else ["batch"])
]


@pytest.mark.parametrize(("name", "norm"), CASES)
def test_every_encoder(name, norm):
    torch.manual_seed(0)
    channels = 1 if name == "small_cnn" else 3
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
