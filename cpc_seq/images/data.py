"""Image data sets for DIM/AMDIM: Fashion-MNIST (IDX files), CIFAR-10, STL-10.

Everything is held in memory as an :class:`ImageArrays`: ``images`` a uint8 tensor
``(N, C, H, W)`` and ``labels`` an int64 tensor ``(N,)`` (``-1`` for unlabelled images).

Layouts on disk
---------------

Fashion-MNIST (Debian/Ubuntu: ``apt-get install dataset-fashion-mnist``, which puts the
four files in ``/usr/share/datasets/fashion-mnist/``; any directory with the same files
works, gzipped or not)::

    ROOT/train-images-idx3-ubyte.gz   (60000, 28, 28) uint8
    ROOT/train-labels-idx1-ubyte.gz   (60000,) uint8 in 0..9
    ROOT/t10k-images-idx3-ubyte.gz    (10000, 28, 28) uint8
    ROOT/t10k-labels-idx1-ubyte.gz    (10000,) uint8 in 0..9

CIFAR-10 (python version; ``download=True`` fetches it with torchvision's downloader)::

    ROOT/cifar-10-batches-py/data_batch_1 .. data_batch_5, test_batch
        pickled dicts: "data" (N, 3072) uint8, rows are R, G, B planes of 32x32;
        "labels" list of N ints in 0..9
    ROOT/cifar-10-batches-py/batches.meta   (optional) "label_names"

The batches are unpickled with a restricted unpickler that only rebuilds numpy arrays and
plain containers, so a tampered file cannot run code.

STL-10 (binary version; ``download=True`` uses torchvision's downloader)::

    ROOT/stl10_binary/train_X.bin, test_X.bin, unlabeled_X.bin
        uint8, N x 3 x 96 x 96, each plane stored column-major
    ROOT/stl10_binary/train_y.bin, test_y.bin    uint8 labels in 1..10
    ROOT/stl10_binary/class_names.txt            (optional) one name per line

Bad input (missing directory or file, wrong magic, sizes that disagree, wrong array shape
or dtype) raises :class:`~cpc_seq.errors.DataError` naming the path and the expected
layout.
"""

from __future__ import annotations

import gzip
import pickle
import sys
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from cpc_seq.errors import DataError

__all__ = [
    "DATASETS",
    "DEFAULT_ROOTS",
    "FASHION_MNIST_CLASSES",
    "CIFAR10_CLASSES",
    "STL10_CLASSES",
    "ImageArrays",
    "check_arrays",
    "read_idx",
    "load_fashion_mnist",
    "load_cifar10",
    "load_stl10",
    "load_dataset",
    "normalize",
    "prepare",
    "NORMALIZATION",
]

DatasetName = Literal["fashion_mnist", "cifar10", "stl10"]
DATASETS = typing.get_args(DatasetName)
DEFAULT_ROOTS = {
    "fashion_mnist": "/usr/share/datasets/fashion-mnist",
    "cifar10": "data/cifar10",
    "stl10": "data/stl10",
}
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]
STL10_CLASSES = [
    "airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck",
]
# Per-channel mean and std of the training images (pixel values scaled to [0, 1]).
NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "stl10": ((0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713)),
}

FASHION_MNIST_LAYOUT = (
    "expected train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
    "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz (gzipped or not; images "
    "(N, 28, 28) uint8, labels (N,) uint8 in 0..9); install them with "
    "'apt-get install dataset-fashion-mnist' (-> /usr/share/datasets/fashion-mnist/)"
)
CIFAR10_LAYOUT = (
    "expected cifar-10-batches-py/{data_batch_1..5,test_batch} (pickled dicts with "
    "'data' (N, 3072) uint8 and 'labels' (N ints)); pass download=true "
    "(data.download=true) to fetch it"
)
STL10_LAYOUT = (
    "expected stl10_binary/{train,test,unlabeled}_X.bin (uint8, N x 3 x 96 x 96) and "
    "{train,test}_y.bin (uint8 labels 1..10); pass download=true (data.download=true) "
    "to fetch it"
)


@dataclass
class ImageArrays:
    """Images and labels in memory.

    ``images``: uint8 ``(N, C, H, W)``; ``labels``: int64 ``(N,)``, ``-1`` when unlabelled;
    ``classes``: class names (index = label); ``source``: where it was read from.
    """

    images: Tensor
    labels: Tensor
    classes: list[str] = field(default_factory=list)
    source: str = ""

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def size(self) -> int:
        """Side length ``H`` (images are square)."""
        return int(self.images.shape[2])

    def subset(self, n: int, seed: int = 0) -> ImageArrays:
        """A random subset of ``n`` images (all when ``n <= 0`` or ``n >= N``), order kept."""
        if n <= 0 or n >= len(self):
            return self
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(self), generator=g)[:n].sort().values
        return ImageArrays(self.images[idx], self.labels[idx], self.classes, self.source)


def check_arrays(
    images: np.ndarray | Tensor,
    labels: np.ndarray | Tensor | Sequence[int],
    source: str,
    num_classes: int | None = None,
    label_source: str | None = None,
) -> tuple[Tensor, Tensor]:
    """Validate and convert images/labels.

    Args:
        images: uint8 ``(N, C, H, W)`` with ``C`` in {1, 3}, or ``(N, H, W)`` (one channel).
        labels: integer ``(N,)``; values in ``[0, num_classes)`` or ``-1`` (unlabelled).
        source: path or name used in error messages.
        num_classes: upper bound for the label values (not checked when ``None``).
        label_source: the labels' own file, named in errors about label values or dtype
            (default ``source``).

    Returns:
        ``images`` uint8 ``(N, C, H, W)`` and ``labels`` int64 ``(N,)`` tensors.

    Raises:
        DataError: naming ``source`` and the expected layout.
    """
    layout = "expected images uint8 (N, C, H, W) with C in {1, 3} (or (N, H, W)) and labels (N,)"
    x = images.detach().cpu().numpy() if isinstance(images, Tensor) else np.asarray(images)
    if x.dtype != np.uint8:
        raise DataError(f"{source}: images have dtype {x.dtype}; {layout}")
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[2] != x.shape[3] or x.shape[2] < 1:
        raise DataError(f"{source}: images have shape {tuple(x.shape)}; {layout} and H == W")
    y = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise DataError(
            f"{source}: labels have shape {tuple(y.shape)} but there are {x.shape[0]} images; "
            f"{layout}"
        )
    lsource = label_source or source
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{lsource}: labels have dtype {y.dtype}; expected integers")
    y = y.astype(np.int64)
    if y.size and (y.min() < -1 or (num_classes is not None and y.max() >= num_classes)):
        bad = int(np.flatnonzero((y < -1) | (y >= (num_classes or np.iinfo(np.int64).max)))[0])
        raise DataError(
            f"{lsource}: labels span [{y.min()}, {y.max()}] (first out of range: label "
            f"{y[bad]} of image {bad}), expected 0..{(num_classes or 1) - 1} (or -1 for unlabelled)"
        )
    if x.shape[0] == 0:
        raise DataError(f"{source}: no images")
    x = np.ascontiguousarray(x)
    if not x.flags.writeable:
        x = x.copy()
    return torch.from_numpy(x), torch.from_numpy(y)


# --------------------------------------------------------------------------- IDX

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: cannot read ({e})") from None


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (``.gz`` or plain) into a numpy array of its declared shape.

    Layout: two zero bytes, a type byte (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions, one big-endian uint32 per
    dimension, then the values (big-endian).
    """
    path = Path(path)
    raw = _read_bytes(path)
    layout = "expected an IDX file: 00 00 <type> <ndim>, ndim big-endian uint32 sizes, data"
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise DataError(f"{path}: not an IDX file (bad magic {raw[:4].hex() or 'empty'}); {layout}")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header; {layout}")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"{path}: IDX header declares shape {shape} ({expected} bytes of data) but the file "
            f"holds {len(raw) - header} bytes; {layout}"
        )
    arr = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=False)


def idx_shape(path: str | Path) -> tuple[int, ...] | None:
    """The shape an IDX file's header declares (reads only the header), or None when it
    cannot be read as one (:func:`read_idx` reports why)."""
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[:2] != b"\0\0" or head[3] == 0:
                return None
            dims = f.read(4 * head[3])
    except (OSError, EOFError, gzip.BadGzipFile):
        return None
    if len(dims) < 4 * head[3]:
        return None
    return tuple(int.from_bytes(dims[4 * i : 4 * i + 4], "big") for i in range(head[3]))


def _find(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (root / name).is_file():
            return root / name
    raise DataError(f"{root}: missing {stem}[.gz]; {FASHION_MNIST_LAYOUT}")


def _check_root(root: Path, layout: str) -> None:
    if not root.exists():
        raise DataError(f"{root}: data set directory does not exist; {layout}")
    if not root.is_dir():
        raise DataError(f"{root}: not a directory; {layout}")
    if not any(root.iterdir()):
        raise DataError(f"{root}: data set directory is empty; {layout}")


def load_fashion_mnist(root: str | Path = DEFAULT_ROOTS["fashion_mnist"],
                       split: str = "train") -> ImageArrays:
    """Fashion-MNIST ``split`` (``train``: 60000, ``test``: 10000) as ``(N, 1, 28, 28)``."""
    root = Path(root)
    if split not in ("train", "test"):
        raise DataError(f"fashion_mnist: unknown split {split!r}; expected train or test")
    _check_root(root, FASHION_MNIST_LAYOUT)
    prefix = "train" if split == "train" else "t10k"
    img_path = _find(root, f"{prefix}-images-idx3-ubyte")
    lab_path = _find(root, f"{prefix}-labels-idx1-ubyte")
    images, labels = read_idx(img_path), read_idx(lab_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{img_path}: images have shape {images.shape}, not (N, 28, 28); "
                        f"{FASHION_MNIST_LAYOUT}")
    other = "t10k" if split == "train" else "train"
    for name in (f"{other}-images-idx3-ubyte.gz", f"{other}-images-idx3-ubyte"):
        shape = idx_shape(root / name) if (root / name).is_file() else None
        if shape is not None and tuple(shape[1:]) != (28, 28):  # caught now, not at the probe
            raise DataError(f"{root / name}: images have shape {shape}, not (N, 28, 28) like "
                            f"{img_path.name}; {FASHION_MNIST_LAYOUT}")
    if labels.ndim != 1:
        raise DataError(f"{lab_path}: labels have shape {labels.shape}; {FASHION_MNIST_LAYOUT}")
    if len(images) != len(labels):
        raise DataError(
            f"{root}: {len(images)} images in {img_path.name} but {len(labels)} labels in "
            f"{lab_path.name}"
        )
    x, y = check_arrays(images, labels, str(img_path), num_classes=10,
                        label_source=str(lab_path))
    return ImageArrays(x, y, list(FASHION_MNIST_CLASSES), str(img_path))


# ----------------------------------------------------------------------- CIFAR-10


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only; any other global is refused."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("copy_reg", "_reconstructor"),
        ("copyreg", "_reconstructor"),
        ("__builtin__", "object"),
        ("builtins", "object"),
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused global {module}.{name}")


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="latin1").load()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            ImportError, IndexError, KeyError) as e:
        raise DataError(f"{path}: not a CIFAR-10 python batch ({e}); {CIFAR10_LAYOUT}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a pickled dict; {CIFAR10_LAYOUT}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _torchvision_download(name: str, root: Path, **kwargs: object) -> None:
    """Fetch a data set with torchvision's downloader (needs internet)."""
    import torchvision.datasets as tvd

    cls = {"cifar10": tvd.CIFAR10, "stl10": tvd.STL10}[name]
    print(f"downloading {name} to {root} with torchvision ...", file=sys.stderr)
    try:
        cls(str(root), download=True, **kwargs)
    except Exception as e:  # network errors come in many types
        raise DataError(f"{root}: downloading {name} failed ({e})") from None


def load_cifar10(root: str | Path = DEFAULT_ROOTS["cifar10"], split: str = "train",
                 download: bool = False) -> ImageArrays:
    """CIFAR-10 ``split`` (``train``: 50000, ``test``: 10000) as ``(N, 3, 32, 32)``."""
    root = Path(root)
    if split not in ("train", "test"):
        raise DataError(f"cifar10: unknown split {split!r}; expected train or test")
    base = root / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    if download and not all((base / n).is_file() for n in names):
        _torchvision_download("cifar10", root, train=split == "train")
    _check_root(root, CIFAR10_LAYOUT)
    xs, ys = [], []
    for name in names:
        path = base / name
        if not path.is_file():
            raise DataError(f"{root}: missing {path.relative_to(root)}; {CIFAR10_LAYOUT}")
        batch = _unpickle(path)
        if "data" not in batch or "labels" not in batch:
            raise DataError(f"{path}: batch lacks 'data' or 'labels'; {CIFAR10_LAYOUT}")
        data = np.asarray(batch["data"])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DataError(
                f"{path}: 'data' has shape {data.shape} dtype {data.dtype}; {CIFAR10_LAYOUT}"
            )
        x, y = check_arrays(data.reshape(-1, 3, 32, 32), np.asarray(batch["labels"]),
                            str(path), num_classes=10)
        xs.append(x)
        ys.append(y)
    classes = list(CIFAR10_CLASSES)
    meta = base / "batches.meta"
    if meta.is_file():
        names_meta = _unpickle(meta).get("label_names")
        if isinstance(names_meta, list) and len(names_meta) == 10:
            classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names_meta]
    return ImageArrays(torch.cat(xs), torch.cat(ys), classes, str(base))


# ------------------------------------------------------------------------- STL-10


def load_stl10(root: str | Path = DEFAULT_ROOTS["stl10"], split: str = "train",
               download: bool = False) -> ImageArrays:
    """STL-10 ``split`` (``train`` 5000, ``test`` 8000, ``unlabeled`` 100000 with labels
    ``-1``, or ``train+unlabeled``) as ``(N, 3, 96, 96)``."""
    root = Path(root)
    if split == "train+unlabeled":
        a = load_stl10(root, "train", download)
        b = load_stl10(root, "unlabeled", download)
        return ImageArrays(torch.cat([a.images, b.images]), torch.cat([a.labels, b.labels]),
                           a.classes, a.source)
    if split not in ("train", "test", "unlabeled"):
        raise DataError(
            f"stl10: unknown split {split!r}; expected train, test, unlabeled or train+unlabeled"
        )
    base = root / "stl10_binary"
    x_path = base / f"{split}_X.bin"
    y_path = base / f"{split}_y.bin"
    if download and not x_path.is_file():
        _torchvision_download("stl10", root, split=split)
    _check_root(root, STL10_LAYOUT)
    if not x_path.is_file():
        raise DataError(f"{root}: missing {x_path.relative_to(root)}; {STL10_LAYOUT}")
    raw = np.frombuffer(_read_bytes(x_path), dtype=np.uint8)
    per = 3 * 96 * 96
    if raw.size == 0 or raw.size % per:
        raise DataError(
            f"{x_path}: {raw.size} bytes is not a whole number of 3x96x96 images; {STL10_LAYOUT}"
        )
    images = raw.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2)  # planes are column-major
    if split == "unlabeled":
        labels = np.full(len(images), -1, dtype=np.int64)
    else:
        if not y_path.is_file():
            raise DataError(f"{root}: missing {y_path.relative_to(root)}; {STL10_LAYOUT}")
        labels = np.frombuffer(_read_bytes(y_path), dtype=np.uint8).astype(np.int64) - 1
        if len(labels) != len(images):
            raise DataError(
                f"{y_path}: {len(labels)} labels for {len(images)} images in {x_path.name}"
            )
        if labels.size and (labels.min() < 0 or labels.max() > 9):
            raise DataError(f"{y_path}: labels outside 1..10; {STL10_LAYOUT}")
    classes = list(STL10_CLASSES)
    names_path = base / "class_names.txt"
    if names_path.is_file():
        lines = [s.strip() for s in names_path.read_text().splitlines() if s.strip()]
        if len(lines) == 10:
            classes = lines
    x, y = check_arrays(images, labels, str(x_path), num_classes=10)
    return ImageArrays(x, y, classes, str(x_path))


# ------------------------------------------------------------------------ generic


def load_dataset(name: str, root: str | None = None, split: str = "train",
                 download: bool = False) -> ImageArrays:
    """Dispatch by name (``fashion_mnist`` | ``cifar10`` | ``stl10``); ``root`` defaults to
    :data:`DEFAULT_ROOTS`."""
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    root = root or DEFAULT_ROOTS[name]
    if name == "fashion_mnist":
        return load_fashion_mnist(root, split)
    if name == "cifar10":
        return load_cifar10(root, split, download)
    return load_stl10(root, split, download)


def normalize(images: Tensor, dataset: str) -> Tensor:
    """uint8 ``(B, C, H, W)`` -> float ``(B, C, H, W)``, scaled to [0, 1] then standardised
    with the data set's per-channel mean and std."""
    mean, std = NORMALIZATION[dataset]
    x = images.float().div_(255.0)
    m = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, -1, 1, 1)
    if x.shape[1] != m.shape[1]:
        raise DataError(f"{dataset}: expected {m.shape[1]} channels, got {x.shape[1]}")
    return (x - m) / s


def prepare(images: Tensor, dataset: str, size: int | None = None) -> Tensor:
    """uint8 ``(B, C, H, W)`` -> normalised float ``(B, C, size, size)`` (bilinear,
    antialiased resize when ``size`` differs from ``H``)."""
    x = normalize(images, dataset)
    if size is not None and size != x.shape[-1]:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear",
                                            align_corners=False, antialias=True)
    return x


def _main(argv: list[str] | None = None) -> int:
    """``python -m cpc_seq.images.data NAME [ROOT]``: check a data set and print a summary."""
    import argparse

    p = argparse.ArgumentParser(description="check an image data set and print its size")
    p.add_argument("name", choices=DATASETS)
    p.add_argument("root", nargs="?", default=None)
    p.add_argument("--download", action="store_true")
    args = p.parse_args(argv)
    try:
        for split in ("train", "test"):
            d = load_dataset(args.name, args.root, split, args.download)
            counts = np.bincount(d.labels[d.labels >= 0].numpy(), minlength=len(d.classes))
            print(f"{args.name} {split}: {len(d)} images {tuple(d.images.shape[1:])} from "
                  f"{d.source}; per-class counts {counts.tolist()}")
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_main())
