import pytest
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


def test_one_fitted_probe_scores_splits_as_separate_trainings_do():
    from contrastkit.train.probe import fit_linear_probe, score_probe

    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 4, (260,), generator=g)
    x = torch.nn.functional.one_hot(y, 4).float() + 0.8 * torch.randn(260, 4, generator=g)
    probe = fit_linear_probe(x[:160], y[:160], num_classes=4, epochs=5, seed=3)
    for part in (slice(160, 210), slice(210, 260)):
        alone = train_linear_probe(
            x[:160], y[:160], x[part], y[part], num_classes=4, epochs=5, seed=3
        )
        scored = score_probe(probe, x[part], y[part])
        assert (scored.train_acc, scored.test_acc) == (alone.train_acc, alone.test_acc)
        assert torch.equal(scored.test_pred, alone.test_pred)
        # the oracle of a prediction: the standardised features through the layer, by hand
        z = (x[part] - x[:160].mean(0)) / x[:160].std(0)
        by_hand = (z @ probe.classifier.weight.T + probe.classifier.bias).argmax(1)
        assert torch.equal(scored.test_pred, by_hand)


@pytest.mark.parametrize(
    ("features", "labels", "classes", "message"),
    [
        (
            torch.zeros(4),
            torch.zeros(4, dtype=torch.long),
            2,
            r"train_features must be a float tensor \(M, F\), got torch.float32 \(4,\)",
        ),
        (
            torch.zeros(0, 3),
            torch.zeros(0, dtype=torch.long),
            2,
            r"train_features must hold at least one row, got \(0, 3\)",
        ),
        (
            torch.zeros(4, 3),
            torch.zeros(4, dtype=torch.long),
            0,
            "num_classes must be an integer >= 1, got 0",
        ),
        (
            torch.zeros(4, 3),
            torch.zeros(3, dtype=torch.long),
            2,
            r"train_labels must be an integer tensor \(4,\), got torch.int64 \(3,\)",
        ),
        (
            torch.zeros(4, 3),
            torch.tensor([0, 1, 2, 1]),
            2,
            r"train_labels must be classes in 0..1 \(num_classes\), got 0..2",
        ),
    ],
)
def test_fit_linear_probe_refuses_bad_input_in_one_line(features, labels, classes, message):
    from contrastkit.train.probe import fit_linear_probe

    with pytest.raises(ValueError, match=f"^{message}$"):
        fit_linear_probe(features, labels, num_classes=classes)
