import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from contrastkit.data import ImageTensorDataset, as_image_dataset, load_dataset
from contrastkit.data.cifar import load_cifar
from contrastkit.data.idx import load_fashion_mnist
from contrastkit.data.stl10 import load_stl10
from contrastkit.errors import ContrastkitError


def write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def fashion_files(root: Path, n_train: int = 12, n_test: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, n_test),
    }
    root.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        write_idx(root / name, arr)
    return arrays


def test_fashion_mnist_reads_idx_gz(tmp_path):
    arrays = fashion_files(tmp_path)
    ds = load_fashion_mnist("train", tmp_path, download=False)
    assert ds.images.shape == (12, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert np.array_equal(ds.images[:, 0].numpy(), arrays["train-images-idx3-ubyte.gz"])
    assert np.array_equal(ds.labels.numpy(), arrays["train-labels-idx1-ubyte.gz"])
    test = load_dataset("fashion-mnist", "test", root=tmp_path)
    assert len(test) == 5 and test.classes[9] == "Ankle boot"


def test_fashion_mnist_missing_files_says_how_to_get_them(tmp_path):
    with pytest.raises(ContrastkitError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("train", tmp_path, download=False)


def test_fashion_mnist_truncated_file_is_a_clear_error(tmp_path):
    fashion_files(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    with gzip.open(path, "wb") as f:
        f.write(raw[:-100])
    with pytest.raises(ContrastkitError, match="corrupt IDX"):
        load_fashion_mnist("train", tmp_path, download=False)
    path.write_bytes(b"not gzip at all")
    with pytest.raises(ContrastkitError, match="gzip"):
        load_fashion_mnist("train", tmp_path, download=False)


def write_cifar10(root: Path, per_batch: int = 4, protocol: int | str | None = None) -> np.ndarray:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(1)
    first = None
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        first = data if first is None else first
        labels = rng.integers(0, 10, per_batch).tolist()
        if protocol == "python2":  # as the official files were written
            (d / name).write_bytes(python2_batch(data, labels))
        else:
            (d / name).write_bytes(pickle.dumps({"data": data, "labels": labels}, protocol))
    with (d / "batches.meta").open("wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    return first


def python2_batch(data: np.ndarray, labels: list[int]) -> bytes:
    """The opcodes of Python 2's cPickle (protocol 2) for a batch under NumPy 1: byte strings
    (``U``/``T``, read back as latin-1 text), ``numpy.core.multiarray._reconstruct``."""

    def text(b: bytes) -> bytes:
        return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<I", len(b)) + b

    n, width = data.shape
    dtype = b"cnumpy\ndtype\n" + text(b"u1") + b"K\x00K\x01\x87R(K\x03" + text(b"|")
    dtype += b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    array = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + text(b"b")
    array += b"\x87R(K\x01K" + bytes([n]) + b"M" + struct.pack("<H", width) + b"\x86" + dtype
    array += b"\x89" + text(data.tobytes()) + b"tb"
    listing = b"](" + b"".join(b"K" + bytes([y]) for y in labels) + b"e"
    batch = text(b"batch_label") + text(b"training batch 1 of 5")
    return b"\x80\x02}(" + text(b"data") + array + text(b"labels") + listing + batch + b"u."


def test_python2_batch_is_what_plain_pickle_reads():
    data = np.arange(2 * 3072, dtype=np.uint64).astype(np.uint8).reshape(2, 3072)
    batch = pickle.loads(python2_batch(data, [3, 7]), encoding="latin1")
    assert batch["labels"] == [3, 7] and batch["batch_label"] == "training batch 1 of 5"
    assert batch["data"].dtype == np.uint8 and np.array_equal(batch["data"], data)


@pytest.mark.parametrize("protocol", ["python2", 2, 4, 5])
def test_cifar10_reads_torchvision_layout(tmp_path, protocol):
    first = write_cifar10(tmp_path, protocol=protocol)
    ds = load_cifar("cifar10", "train", tmp_path, download=False)
    assert ds.images.shape == (20, 3, 32, 32) and ds.classes[3] == "c3"
    # row layout: 1024 red, 1024 green, 1024 blue values, each row-major 32×32
    c, y, x = 2, 5, 7
    assert int(ds.images[0, c, y, x]) == int(first[0, c * 1024 + y * 32 + x])
    assert len(load_dataset("cifar10", "test", root=tmp_path)) == 4


def test_cifar100_fine_labels(tmp_path):
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    for name, n in [("train", 6), ("test", 3)]:
        with (d / name).open("wb") as f:
            pickle.dump({"data": np.zeros((n, 3072), np.uint8), "fine_labels": list(range(n))}, f)
    ds = load_dataset("cifar100", "train", root=tmp_path)
    assert ds.labels.tolist() == list(range(6))


def test_cifar_corrupt_and_missing(tmp_path):
    with pytest.raises(ContrastkitError, match="--download"):
        load_cifar("cifar10", "train", tmp_path, download=False)
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"\x80\x04garbage")
    with pytest.raises(ContrastkitError, match="corrupt CIFAR batch"):
        load_cifar("cifar10", "train", tmp_path, download=False)


def test_cifar_batch_with_a_payload_runs_nothing(tmp_path, payload):
    write_cifar10(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    batch.write_bytes(pickle.dumps({"data": np.zeros((1, 3072), np.uint8), "x": payload}))
    payload.assert_runs_under(lambda: pickle.loads(batch.read_bytes()))
    with pytest.raises(ContrastkitError) as e:
        load_cifar("cifar10", "train", tmp_path, download=False)
    assert not payload.ran()
    assert str(e.value) == (
        f"{batch}: refused: it holds posix.system, not only the lists, strings, numbers and "
        "NumPy arrays of a CIFAR batch (unpickling it could run code)"
    )


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_batch_of_python_objects_is_refused(tmp_path, protocol):
    write_cifar10(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    objects = np.array([[1, "a"]], dtype=object)
    batch.write_bytes(pickle.dumps({"data": objects, "labels": [0]}, protocol=protocol))
    with pytest.raises(ContrastkitError, match="refused: it holds an array of Python objects"):
        load_cifar("cifar10", "test", tmp_path, download=False)


def test_stl10_binary_and_unlabelled_split(tmp_path):
    d = tmp_path / "stl10_binary"
    d.mkdir()
    img = np.zeros((2, 3, 96, 96), np.uint8)
    img[0, 1, 3, 5] = 200  # stored column-major: (N, C, W, H)
    img.tofile(d / "train_X.bin")
    np.array([1, 10], np.uint8).tofile(d / "train_y.bin")
    np.zeros((3, 3, 96, 96), np.uint8).tofile(d / "unlabeled_X.bin")
    ds = load_stl10("train+unlabeled", tmp_path, download=False)
    assert ds.images.shape == (5, 3, 96, 96)
    assert ds.labels.tolist() == [0, 9, -1, -1, -1] and not ds.has_labels
    assert int(ds.images[0, 1, 5, 3]) == 200


def write_png(path: Path, value: int, size: int = 10, mode: str = "L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (size, size), value if mode == "L" else (value, 0, 0)).save(path)


def test_folder_with_train_and_test(tmp_path):
    for split, n in [("train", 3), ("test", 2)]:
        for cls, v in [("cat", 10), ("dog", 200)]:
            for i in range(n):
                write_png(tmp_path / split / cls / f"{i}.png", v)
    ds = load_dataset(f"folder:{tmp_path}", "train")
    assert ds.images.shape == (6, 1, 10, 10) and ds.classes == ["cat", "dog"]
    assert ds.images[ds.labels == 1].min() == 200
    assert len(load_dataset(f"folder:{tmp_path}", "test")) == 4


def test_folder_split_fraction_resize_and_rgb(tmp_path):
    for cls in ["a", "b"]:
        for i in range(5):
            write_png(tmp_path / cls / f"{i}.png", 50 * i, size=12 if i else 8, mode="RGB")
    train = load_dataset(f"folder:{tmp_path}", "train", image_size=16)
    test = load_dataset(f"folder:{tmp_path}", "test", image_size=16)
    assert train.images.shape[1:] == (3, 16, 16)
    assert len(train) == 8 and len(test) == 2 and sorted(test.labels.tolist()) == [0, 1]


def test_folder_errors(tmp_path):
    with pytest.raises(ContrastkitError, match="does not exist"):
        load_dataset(f"folder:{tmp_path / 'nope'}", "train")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ContrastkitError, match="not a readable image"):
        load_dataset(f"folder:{tmp_path}", "train")


def test_digits_fixed_stratified_split():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert (len(train), len(test)) == (1437, 360)
    assert train.images.shape[1:] == (1, 8, 8) and int(train.images.max()) == 255
    counts = torch.bincount(test.labels)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: 36 ± 1 per class
    again = load_dataset("digits", "test")
    assert torch.equal(again.images, test.images)


def test_registry_rejects_unknown_name_and_split():
    with pytest.raises(ContrastkitError, match=r"unknown data set 'mnist'.*digits"):
        load_dataset("mnist")
    with pytest.raises(ContrastkitError, match="no split 'val'"):
        load_dataset("digits", "val")


def test_any_dataset_is_materialised():
    class Floats(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return torch.full((2, 4, 4), i / 2), i

    ds = as_image_dataset(Floats())
    assert isinstance(ds, ImageTensorDataset)
    assert (
        ds.images.dtype == torch.uint8
        and ds.images[2].max() == 255
        and ds.labels.tolist() == [0, 1, 2]
    )

    class Ragged(Floats):
        def __getitem__(self, i):
            return torch.zeros(1, 4 + i, 4), 0

    with pytest.raises(ContrastkitError, match="every image must have shape"):
        as_image_dataset(Ragged())
