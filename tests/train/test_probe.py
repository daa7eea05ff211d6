import torch

from contrastkit.data import load_dataset
from contrastkit.models import create_model
from contrastkit.train.features import extract_features
from contrastkit.train.probe import train_linear_probe


def test_probe_leaves_backbone_bit_for_bit_unchanged():
    torch.manual_seed(0)
    encoder = create_model("small_cnn", in_channels=1, image_size=8)
    encoder.train()  # as after pretraining: BatchNorm would update its statistics in train mode
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    train = load_dataset("digits", "train").subset(torch.arange(200))
    test = load_dataset("digits", "test").subset(torch.arange(50))
    ftr, fte = (extract_features(encoder, d.images, mean=[0.3], std=[0.37]) for d in (train, test))
    result = train_linear_probe(ftr, train.labels, fte, test.labels, num_classes=10, epochs=3)
    after = encoder.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k
    assert encoder.training  # mode restored
    assert all(p.grad is None for p in encoder.parameters())
    assert ftr.shape == (200, encoder.num_features) and not ftr.requires_grad
    assert 0.0 <= result.test_acc <= 1.0


def test_linear_probe_separates_separable_features():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (300,), generator=g)
    x = torch.nn.functional.one_hot(y, 3).float() * 3 + 0.3 * torch.randn(300, 3, generator=g)
    r = train_linear_probe(x[:200], y[:200], x[200:], y[200:], num_classes=3, epochs=100)
    assert r.train_acc == 1.0 and r.test_acc == 1.0 and r.test_pred.shape == (100,)
