"""Option parsing helpers of ``contrastkit.train.config``."""

import dataclasses

import pytest

from contrastkit.data import PRESETS
from contrastkit.train.config import PretrainConfig, comma_list


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


def test_augment_help_names_every_preset():
    (field,) = [f for f in dataclasses.fields(PretrainConfig) if f.name == "augment"]
    listed = field.metadata["help"].split(":")[1].split("(")[0].replace(" or ", ", ")
    assert sorted(name.strip() for name in listed.split(",")) == sorted(PRESETS)
