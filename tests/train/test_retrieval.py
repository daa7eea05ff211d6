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
        ({"reference": torch.full((4, 2), torch.inf)}, "reference must be finite, got a NaN or"),
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


def _metrics_loop(query, labels, reference, reference_labels, ks, exclude_self=False):
    """P@1, Recall@k, MAP@R by a plain loop: float64 cosine, a stable sort per query.

    Ties keep the order of the reference (Python's sort is stable); queries without a
    relevant reference are left out and counted.
    """
    q = torch.nn.functional.normalize(query.double(), dim=1).tolist()
    r = torch.nn.functional.normalize(reference.double(), dim=1).tolist()
    p1, found, ap, counted = 0, dict.fromkeys(ks, 0), 0.0, 0
    for i, qi in enumerate(q):
        others = [j for j in range(len(r)) if not (exclude_self and j == i)]
        order = sorted(others, key=lambda j: -sum(a * b for a, b in zip(qi, r[j], strict=True)))
        rel = [int(reference_labels[j]) == int(labels[i]) for j in order]
        big_r = sum(rel)
        if big_r == 0:
            continue
        counted += 1
        p1 += rel[0]
        for k in ks:
            found[k] += any(rel[:k])
        hits, total = 0, 0.0
        for rank in range(1, big_r + 1):
            if rel[rank - 1]:
                hits += 1
                total += hits / rank
        ap += total / big_r
    return p1 / counted, {k: v / counted for k, v in found.items()}, ap / counted, counted


def test_ties_at_the_selection_threshold_rank_the_first_listed_first():
    # q (class 0) at 0°; references u (0°, class 0) and the same vector v twice (60°), the
    # first v of class 1: R = 2, the depth-2 threshold cuts the tie of the two v's
    u, v = _unit([0])[0], _unit([60])[0]
    for sign, want, want_swapped in ((1, 0.5, 1.0), (-1, 0.25, 0.5)):
        # sign -1: the query points away, every similarity is negative and v ranks first
        query = sign * _unit([0])
        m = retrieval_metrics(
            query, torch.tensor([0]), torch.stack([u, v, v]), torch.tensor([0, 1, 0]), ks=(1,)
        )
        assert m.map_at_r == want  # u, v (class 1), v (class 0): (1/1 + 0) / 2; -1: (0 + 1/2) / 2
        swapped = retrieval_metrics(
            query, torch.tensor([0]), torch.stack([u, v, v]), torch.tensor([0, 0, 1]), ks=(1,)
        )
        assert swapped.map_at_r == want_swapped  # the class-0 v first: (1 + 2/2) / 2; -1: 1/2


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("exclude_self", [False, True])
def test_agrees_with_a_loop_on_ties_and_edge_cases(seed, exclude_self):
    g = torch.Generator().manual_seed(seed)
    # 30 references in 3 features, a third of them repeats of others (ties), labels 0-3
    # with class 3 a single reference (R = 1 for its queries unless it leaves itself out)
    base = torch.randn(20, 3, generator=g)
    reference = torch.cat([base, base[torch.randint(0, 20, (10,), generator=g)]])
    ref_labels = torch.randint(0, 3, (30,), generator=g)
    ref_labels[int(torch.randint(0, 30, (1,), generator=g))] = 3
    if exclude_self:
        query, labels = reference, ref_labels
    else:
        query = torch.cat([torch.randn(12, 3, generator=g), reference[:6], torch.zeros(1, 3)])
        labels = torch.randint(0, 5, (19,), generator=g)  # class 4: no reference (lone)
        labels[-2] = 3
    ks = (1, 2, 5, 30)
    p1, recall, ap, counted = _metrics_loop(query, labels, reference, ref_labels, ks, exclude_self)
    for chunk in (None, 4):
        m = retrieval_metrics(
            query, labels, reference, ref_labels, ks=ks, exclude_self=exclude_self, chunk=chunk
        )
        assert m.precision_at_1 == pytest.approx(p1, abs=1e-12)
        assert m.recall_at_k == pytest.approx(recall, abs=1e-12)
        assert m.map_at_r == pytest.approx(ap, abs=1e-12)
        assert m.n_queries == counted and m.lone_queries == len(query) - counted


@pytest.mark.parametrize("exclude_self", [False, True])
def test_one_class_r_equals_m_and_one_reference_r_equals_1(exclude_self):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(9, 4, generator=g)
    same = torch.zeros(9, dtype=torch.long)  # every reference relevant: R = M (M - 1)
    m = retrieval_metrics(x, same, x, same, exclude_self=exclude_self)
    assert (m.precision_at_1, m.map_at_r, m.recall_at_k[1]) == (1.0, 1.0, 1.0)
    one = retrieval_metrics(x[:1], same[:1], x[:1], same[:1])  # M = 1, R = 1, ks up to 10
    assert (one.precision_at_1, one.map_at_r, one.recall_at_k[10]) == (1.0, 1.0, 1.0)
    labels = torch.arange(9) % 3
    p1, recall, ap, _ = _metrics_loop(x, labels, x, labels, (1, 5, 10), exclude_self)
    got = retrieval_metrics(x, labels, x, labels, exclude_self=exclude_self)
    assert got.precision_at_1 == pytest.approx(p1, abs=1e-12)
    assert got.recall_at_k == pytest.approx(recall, abs=1e-12)
    assert got.map_at_r == pytest.approx(ap, abs=1e-12)
