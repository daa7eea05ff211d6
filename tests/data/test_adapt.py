import numpy as np
import pytest
import torch
from PIL import Image

from contrastkit.data.adapt import AdaptedShardSplit, adapt_images
from contrastkit.data.prepare import prepare
from contrastkit.data.shards import ShardSplit
from contrastkit.errors import ContrastkitError


def test_colour_to_grey_is_pils_luma_and_grey_to_colour_repeats():
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None]  # (1, 3, 5, 7)
    _, notes = adapt_images(x, 1, 5)
    assert notes == ["colour → grey (BT.601 luma)", "resized 5×7 → 5×5 (bilinear)"]
    grey_only, notes = adapt_images(x[..., :5], 1, 5)
    want = np.asarray(Image.fromarray(np.ascontiguousarray(rgb[:, :5])).convert("L")).astype(int)
    assert np.abs(grey_only[0, 0].numpy().astype(int) - want).max() <= 1  # PIL rounds in ints
    assert notes == ["colour → grey (BT.601 luma)"]
    colour, notes = adapt_images(grey_only, 3, 5)
    assert torch.equal(colour, grey_only.repeat(1, 3, 1, 1)) and notes == [
        "grey → 3 channels (repeated)"
    ]
    unchanged, notes = adapt_images(colour, 3, 5)
    assert unchanged is colour and notes == []


def test_resize_keeps_a_constant_image_and_bad_input_is_refused():
    x = torch.full((2, 1, 28, 28), 77, dtype=torch.uint8)
    small, notes = adapt_images(x, 1, 8)
    assert small.shape == (2, 1, 8, 8) and bool((small == 77).all())
    assert notes == ["resized 28×28 → 8×8 (bilinear)"]
    with pytest.raises(ContrastkitError, match=r"images must be uint8 \(N, C, H, W\) with 1 or 3"):
        adapt_images(x.float(), 1, 8)
    with pytest.raises(ContrastkitError, match="expected 1 or 3 channels"):
        adapt_images(x, 2, 8)


class _Grey(torch.utils.data.Dataset):
    """The given uint8 images (N, 1, H, W), labels i % 2."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], i % 2


def test_an_adapted_split_keeps_reading_after_its_source_is_closed(tmp_path):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 1, 5, 5), generator=g, dtype=torch.uint8)
    prepare(_Grey(images), tmp_path / "p", workers=1, quiet=True)
    source = ShardSplit(tmp_path / "p", "train")
    adapted, notes = AdaptedShardSplit.of(source, 3, 5)
    assert notes == ["grey → 3 channels (repeated)"]
    colour = images.repeat(1, 3, 1, 1)  # (6, 3, 5, 5): grey repeated, by hand
    assert torch.equal(adapted.read([4, 1]), colour[[4, 1]])  # opens a descriptor
    source.close()  # closes the source's descriptors only
    assert torch.equal(adapted.read([0, 5]), colour[[0, 5]])
    adapted.close()
    assert torch.equal(source.read([2]), images[[2]])  # and the other way round
