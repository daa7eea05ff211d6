import numpy as np

from contrastkit.train.plots import plot_tsne


def test_tsne_legend_names_the_classes(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.array([0, 2, 3]), 20)
    features = rng.normal(size=(60, 8)) + labels[:, None] * 4.0
    names = ["T-shirt/top", "Trouser", "Pullover"]  # label 3 has no name
    entries = plot_tsne(features, labels, tmp_path / "t.png", "x", names)
    assert entries == ["T-shirt/top", "Pullover", "3"]
    assert (tmp_path / "t.png").stat().st_size > 0
    assert plot_tsne(features, labels, tmp_path / "u.png", "x") == ["0", "2", "3"]


def test_tsne_of_many_classes_uses_a_colour_bar(tmp_path):
    labels = np.arange(42) % 21
    features = np.random.default_rng(1).normal(size=(42, 4))
    assert plot_tsne(features, labels, tmp_path / "t.png", "x", [str(i) for i in range(21)]) == []
    assert (tmp_path / "t.png").is_file()


def test_confusion_numbers_are_white_on_the_dark_cells():
    from contrastkit.train.plots import text_colours

    confusion = np.array([[90, 3], [10, 0]])
    assert text_colours(confusion).tolist() == [["white", "black"], ["black", "black"]]
    # the threshold is half of the largest count: 23 of 46 stays black, 24 turns white
    assert text_colours(np.array([[46, 23], [24, 0]])).tolist() == [
        ["white", "black"],
        ["white", "black"],
    ]
    assert text_colours(np.zeros((2, 2), int)).tolist() == [["black"] * 2] * 2
