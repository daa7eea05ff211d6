"""Retrieval metrics against pytorch-metric-learning's AccuracyCalculator and a hand case."""

import math

import numpy as np
import pytest
import torch

from contrastkit.train.retrieval import retrieval_metrics


def _unit(degrees):
    a = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    return torch.stack([a.cos(), a.sin()], dim=1)


def test_hand_computed_case():
    # references on the unit circle: 0° (class 0), 10° (1), 20° (0), 180° (1)
    ref, ref_labels = _unit([0, 10, 20, 180]), torch.tensor([0, 1, 0, 1])
    # q0 at 1° (class 0): order 0°, 10°, 20°, 180° -> relevant 1, 0, 1, 0; R = 2; AP@R = 1/2
    # q1 at 12° (class 0): order 10°, 20°, 0°, 180° -> relevant 0, 1, 1, 0; AP@R = (1/2)/2
    # q2 (class 2): no reference of its class -> left out and counted
    query, labels = _unit([1, 12, 50]), torch.tensor([0, 0, 2])
    m = retrieval_metrics(query, labels, ref, ref_labels, ks=(1, 2, 3))
    assert m.precision_at_1 == 0.5
    assert m.recall_at_k == {1: 0.5, 2: 1.0, 3: 1.0}
    assert m.map_at_r == pytest.approx(0.375, abs=1e-12)
    assert (m.n_queries, m.lone_queries) == (2, 1)


def _pml(query, labels, reference=None, reference_labels=None):
    calc_module = pytest.importorskip("pytorch_metric_learning.utils.accuracy_calculator")
    calc = calc_module.AccuracyCalculator(
        include=("precision_at_1", "mean_average_precision_at_r"),
        k="max_bin_count",
        device=torch.device("cpu"),
    )  # its default neighbour search: faiss, L2 on the (unit) vectors given
    unit = torch.nn.functional.normalize
    ref = None if reference is None else unit(reference, dim=1)
    return calc.get_accuracy(unit(query, dim=1), labels, ref, reference_labels)


def _recall_loop(query, labels, reference, reference_labels, k, exclude_self=False):
    """Recall@k by a plain loop: float64 cosine, a full sort per query."""
    q = torch.nn.functional.normalize(query.double(), dim=1).numpy()
    r = torch.nn.functional.normalize(reference.double(), dim=1).numpy()
    hits = counted = 0
    for i in range(len(q)):
        others = [j for j in range(len(r)) if not (exclude_self and j == i)]
        if not any(reference_labels[j] == labels[i] for j in others):
            continue
        order = sorted(others, key=lambda j: -float(q[i] @ r[j]))
        hits += any(reference_labels[j] == labels[i] for j in order[:k])
        counted += 1
    return hits / counted


@pytest.mark.parametrize("chunk", [None, 7])
def test_agrees_with_pytorch_metric_learning(chunk):
    g = torch.Generator().manual_seed(0)
    reference, ref_labels = (
        torch.randn(500, 16, generator=g),
        torch.randint(0, 6, (500,), generator=g),
    )
    query, labels = torch.randn(300, 16, generator=g), torch.randint(0, 7, (300,), generator=g)
    m = retrieval_metrics(query, labels, reference, ref_labels, chunk=chunk)
    want = _pml(query, labels, reference, ref_labels)
    assert m.lone_queries == int((labels == 6).sum()) > 0  # class 6 has no reference
    assert m.precision_at_1 == pytest.approx(want["precision_at_1"], abs=1e-6)
    assert m.map_at_r == pytest.approx(want["mean_average_precision_at_r"], abs=1e-6)
    assert m.recall_at_k[1] == pytest.approx(want["precision_at_1"], abs=1e-6)
    for k in (5, 10):
        assert m.recall_at_k[k] == pytest.approx(
            _recall_loop(query, labels, reference, ref_labels, k), abs=1e-12
        )


def test_leave_one_out_agrees_with_pytorch_metric_learning():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(400, 8, generator=g), torch.randint(0, 5, (400,), generator=g)
    m = retrieval_metrics(x, y, x, y, exclude_self=True, chunk=64)
    want = _pml(x, y)  # no reference: the queries are the reference, each without itself
    assert m.precision_at_1 == pytest.approx(want["precision_at_1"], abs=1e-6)
    assert m.map_at_r == pytest.approx(want["mean_average_precision_at_r"], abs=1e-6)
    assert m.recall_at_k[10] == pytest.approx(_recall_loop(x, y, x, y, 10, True), abs=1e-12)


def test_perfect_clusters_score_one_and_no_relevant_reference_is_nan():
    centres = torch.eye(4)
    labels = torch.arange(4).repeat_interleave(5)
    x = centres[labels] + 0.01 * torch.randn(20, 4, generator=torch.Generator().manual_seed(2))
    m = retrieval_metrics(x, labels, x, labels, exclude_self=True)
    assert (m.precision_at_1, m.map_at_r, m.recall_at_k[10]) == (1.0, 1.0, 1.0)
    none = retrieval_metrics(x[:3], torch.full((3,), 9), x, labels)
    assert np.isnan(none.map_at_r) and none.lone_queries == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"query": torch.zeros(3)}, r"query must be a non-empty \(N, F\) tensor, got shape \(3,\)"),
        ({"reference": torch.zeros(4, 3)}, "same feature size, got 2 and 3"),
        ({"query_labels": torch.zeros(2)}, r"query_labels must have shape \(3,\), got \(2,\)"),
        ({"ks": (0, 5)}, r"ks must be integers >= 1, got \(0, 5\)"),
        ({"exclude_self": True}, "exclude_self needs the queries to be the reference"),
    ],
)
def test_bad_input_is_one_line(kwargs, message):
    args = {
        "query": torch.zeros(3, 2),
        "query_labels": torch.zeros(3),
        "reference": torch.zeros(4, 2),
        "reference_labels": torch.zeros(4),
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        retrieval_metrics(**args)
