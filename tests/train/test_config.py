"""Option parsing helpers of ``contrastkit.train.config``."""

import pytest

from contrastkit.train.config import comma_list


@pytest.mark.parametrize(
    ("texts", "items"),
    [
        (("supcon,ce",), ["supcon", "ce"]),
        ((" supcon , ce ,",), ["supcon", "ce"]),  # spaces and a trailing comma
        (("precision", "lr,seed"), ["precision", "lr", "seed"]),  # a repeated --pool flag
        (("", " , "), []),
        ((), []),
    ],
)
def test_comma_list(texts, items):
    assert comma_list(*texts) == items
