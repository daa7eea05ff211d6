import torch

from contrastkit.train.knn import knn_accuracy, knn_predict


def test_weighted_vote_matches_loop():
    g = torch.Generator().manual_seed(0)
    bank = torch.randn(50, 6, generator=g)
    labels = torch.randint(0, 4, (50,), generator=g)
    queries = torch.randn(9, 6, generator=g)
    pred = knn_predict(bank, labels, queries, num_classes=4, k=7, t=0.5, chunk=4)
    nb = torch.nn.functional.normalize(bank, dim=1)
    for i, q in enumerate(torch.nn.functional.normalize(queries, dim=1)):
        sims = [(float(q @ nb[j]), int(labels[j])) for j in range(50)]
        votes = [0.0] * 4
        for s, y in sorted(sims, reverse=True)[:7]:
            votes[y] += float(torch.tensor(s / 0.5).exp())
        assert int(pred[i]) == max(range(4), key=lambda c: votes[c])


def test_separated_clusters_are_perfect_and_k_is_capped():
    centres = torch.eye(3) * 10
    bank = centres.repeat_interleave(5, 0) + 0.1 * torch.randn(15, 3)
    labels = torch.arange(3).repeat_interleave(5)
    assert knn_accuracy(bank, labels, centres, torch.arange(3), num_classes=3, k=200) == 1.0
