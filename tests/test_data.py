"""Datasets: built-in data, local formats, path safety, splits, the device loader and its augmentation."""

from __future__ import annotations

import dataclasses
import os
import pickle
import struct
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from nas.data import DataSplits, DeviceLoader, Split, dataset_names, describe_datasets, load_dataset
from nas.data.augment import crop_flip, crop_pad
from nas.data.digits import split_indices as digits_indices
from nas.data.shapes import KINDS, generate
from nas.data.splitting import stratified_split
from nas.errors import InvalidInput
from nas.spec import DatasetName, DatasetSpec


@pytest.fixture(scope="module")
def digits() -> DataSplits:
    return load_dataset(DatasetSpec(name="digits"))


@pytest.fixture(scope="module")
def shapes() -> DataSplits:
    return load_dataset(DatasetSpec(name="shapes", num_samples=400, seed=3))


def toy(x: torch.Tensor, y: torch.Tensor | None = None, *, flip_ok: bool = True) -> DataSplits:
    """A DataSplits around given uint8 images (mean 0, std 1/255 so that normalised x equals the raw pixels)."""
    y = torch.zeros(len(x), dtype=torch.int64) if y is None else y
    split = Split(x=x, y=y)
    c = x.shape[1]
    return DataSplits(
        name="toy",
        num_classes=int(y.max()) + 1,
        channels=c,
        image_size=x.shape[-1],
        train=split,
        val=split,
        test=split,
        mean=(0.0,) * c,
        std=(1 / 255,) * c,
        class_names=["a"],
        flip_ok=flip_ok,
    )


def ramps(n: int, size: int = 16) -> torch.Tensor:
    """Images whose pixel value grows left to right (1..size), so a flip reverses the order."""
    row = torch.arange(1, size + 1, dtype=torch.uint8)
    return row.expand(n, 1, size, size).clone()


def all_batches(loader: DeviceLoader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]


# ----------------------------------------------------------------------------------------------- registry


def test_registry_covers_every_spec_name() -> None:
    assert dataset_names() == sorted(get_args(DatasetName))
    described = {d["name"]: d for d in describe_datasets()}
    assert set(described) == set(dataset_names())
    assert described["digits"]["needs_path"] is False and described["cifar10"]["needs_path"] is True
    assert described["cifar100"]["num_classes"] == 100 and described["shapes"]["num_classes"] == len(KINDS)


# ----------------------------------------------------------------------------------------------- digits


def test_digits_shapes_and_sizes(digits: DataSplits) -> None:
    assert (digits.num_classes, digits.channels, digits.image_size) == (10, 1, 16)
    assert sum(digits.sizes().values()) == 1797
    for split in (digits.train, digits.val, digits.test):
        assert split.x.dtype == torch.uint8 and split.x.shape[1:] == (1, 16, 16)
        assert split.y.dtype == torch.int64 and set(split.y.tolist()) == set(range(10))
    assert int(digits.train.x.max()) > 200  # scaled from 0..16 to 0..255
    assert digits.flip_ok is False
    assert len(digits.mean) == 1 and 0.1 < digits.mean[0] < 0.5


def test_digits_native_size_is_exactly_scaled() -> None:
    data = load_dataset(DatasetSpec(name="digits", image_size=8))
    values = set(torch.cat([data.train.x, data.val.x, data.test.x]).unique().tolist())
    assert values <= {round(v * 255 / 16) for v in range(17)}


def test_digits_splits_disjoint_fixed_test_and_stratified() -> None:
    train, val, test = digits_indices(seed=0, val_fraction=0.2)
    assert len(np.intersect1d(train, val)) == len(np.intersect1d(train, test)) == len(np.intersect1d(val, test)) == 0
    assert len(train) + len(val) + len(test) == 1797
    assert abs(len(test) - 0.2 * 1797) <= 1
    train2, val2, test2 = digits_indices(seed=7, val_fraction=0.3)
    np.testing.assert_array_equal(test, test2)  # the test set never changes
    assert not np.array_equal(val, val2)
    assert len(np.intersect1d(train2, test2)) == 0
    from nas.data.digits import _raw

    y = _raw()[1]
    overall = np.bincount(y, minlength=10) / len(y)
    for part in (test, val):
        share = np.bincount(y[part], minlength=10) / len(part)
        assert np.abs(share - overall).max() < 0.02


def test_digits_limit_is_stratified() -> None:
    data = load_dataset(DatasetSpec(name="digits", limit=100))
    assert len(data.train) == 100
    assert data.train.y.bincount(minlength=10).tolist() == [10] * 10
    assert len(data.test) == 359  # limit touches the training images only


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(0, 4), min_size=1, max_size=200),
    st.floats(0.0, 1.0),
    st.integers(0, 2**31 - 1),
)
def test_stratified_split_partitions(labels: list[int], fraction: float, seed: int) -> None:
    y = np.asarray(labels)
    kept, held = stratified_split(y, fraction, seed)
    assert len(np.intersect1d(kept, held)) == 0 and len(kept) + len(held) == len(y)
    assert len(held) == int(fraction * len(y) + 0.5)
    for c in np.unique(y):  # each class gets its share, up to rounding
        assert abs((y[held] == c).sum() - fraction * (y == c).sum()) < 1.5  # rounding of the total and the share
    again = stratified_split(y, fraction, seed)
    np.testing.assert_array_equal(held, again[1])


# ----------------------------------------------------------------------------------------------- shapes


def test_shapes_deterministic_by_seed() -> None:
    a, b, c = generate(64, 24, seed=5), generate(64, 24, seed=5), generate(64, 24, seed=6)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y) and torch.equal(a.masks, b.masks)
    assert not torch.equal(a.x, c.x)
    assert a.x.shape == (64, 3, 24, 24) and a.masks is not None and a.masks.shape == (64, 24, 24)


def check_shapes_split(split: Split, size: int) -> None:
    assert split.masks is not None and split.boxes is not None
    assert int(split.masks.min()) >= 0 and int(split.masks.max()) <= len(KINDS)
    for y, mask, boxes in zip(split.y, split.masks, split.boxes, strict=True):
        assert boxes.dtype == torch.float32 and boxes.shape[1] == 5 and 1 <= len(boxes) <= 3
        assert int(boxes[0, 0]) == int(y)  # the first box is the largest shape, whose kind is the label
        assert bool((mask == y + 1).any())
        sizes = (boxes[:, 3] - boxes[:, 1]).maximum(boxes[:, 4] - boxes[:, 2])
        assert float(sizes[0]) >= float(sizes.max()) - 1
        # every labelled pixel lies in a box of its kind
        covered = torch.zeros_like(mask, dtype=torch.bool)
        for kind, x0, y0, x1, y1 in boxes.tolist():
            assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size
            region = torch.zeros_like(covered)
            region[int(y0) : int(y1), int(x0) : int(x1)] = True
            covered |= region & (mask == int(kind) + 1)
        assert torch.equal(covered, mask > 0)


def test_shapes_masks_boxes_and_labels_agree(shapes: DataSplits) -> None:
    assert shapes.num_classes == len(KINDS) >= 5 and shapes.class_names == list(KINDS)
    for split in (shapes.train, shapes.val, shapes.test):
        check_shapes_split(split, 32)


@pytest.mark.parametrize("size", [8, 13, 64])
def test_shapes_other_sizes(size: int) -> None:
    data = load_dataset(DatasetSpec(name="shapes", num_samples=60, image_size=size, seed=1))
    assert data.image_size == size and data.train.x.shape[1:] == (3, size, size)
    assert sum(data.sizes().values()) == 60
    check_shapes_split(data.train, size)


def test_shapes_classes_balanced_and_images_varied(shapes: DataSplits) -> None:
    counts = torch.cat([shapes.train.y, shapes.val.y, shapes.test.y]).bincount(minlength=len(KINDS))
    assert int(counts.min()) > 400 / len(KINDS) / 2
    assert float(shapes.train.x.float().std()) > 30
    assert sum(shapes.sizes().values()) == 400


# No CPU-time bound on generate() here: a threshold fails on a busy shared machine and says nothing on a fast one.
# Its speed (~0.4 s of CPU for 3000 images at 32 px on one core) matters to benchmarks/rank_correlation.py, which
# generates 'shapes' on every run; measure it there (or with a script in benchmarks/), not in the unit tests.


# ----------------------------------------------------------------------------------------------- loader


def test_loader_batches_and_normalisation(digits: DataSplits) -> None:
    loader = digits.loader("train", 100, shuffle=False, augment=False)
    n = len(digits.train)
    assert loader.num_examples == n and loader.batch_size == 100
    assert len(loader) == -(-n // 100) and loader.drop_last is False
    batches = all_batches(loader)
    assert len(batches) == len(loader)
    x = torch.cat([b[0] for b in batches])
    assert x.dtype == torch.float32 and x.shape == (n, 1, 16, 16)
    assert abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1) < 1e-2
    expected = (digits.train.x.float() / 255 - digits.mean[0]) / digits.std[0]
    torch.testing.assert_close(x, expected)
    assert torch.equal(torch.cat([b[1] for b in batches]), digits.train.y)


def test_loader_drop_last_default(digits: DataSplits) -> None:
    n = len(digits.train)
    shuffled = digits.loader("train", 100, shuffle=True, augment=False)
    assert shuffled.drop_last and len(shuffled) == n // 100
    assert all(len(y) == 100 for _, y in shuffled)
    whole = digits.loader("train", 10_000, shuffle=True, augment=False)
    assert not whole.drop_last and len(whole) == 1 and len(next(iter(whole))[1]) == n
    assert len(digits.loader("train", 100, shuffle=True, augment=False, drop_last=False)) == -(-n // 100)


def test_loader_shuffles_each_epoch_without_global_rng(digits: DataSplits) -> None:
    global_state = torch.get_rng_state()
    loader = digits.loader("val", 32, shuffle=True, augment=True, seed=11)
    epoch1, epoch2 = all_batches(loader), all_batches(loader)
    assert torch.equal(torch.get_rng_state(), global_state)
    assert not torch.equal(epoch1[0][1], epoch2[0][1])
    labels1 = torch.cat([y for _, y in epoch1]).sort().values
    assert torch.equal(labels1, torch.cat([y for _, y in epoch2]).sort().values)
    same = digits.loader("val", 32, shuffle=True, augment=True, seed=11)
    for (xa, ya), (xb, yb) in zip(epoch1, all_batches(same), strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    other = all_batches(digits.loader("val", 32, shuffle=True, augment=True, seed=12))
    assert not torch.equal(other[0][1], epoch1[0][1])


def test_loader_state_dict_resumes_exactly(shapes: DataSplits) -> None:
    first = shapes.loader("train", 64, shuffle=True, augment=True, seed=3)
    all_batches(first)
    state = first.state_dict()
    assert state["epoch"] == 1 and state["generator"].dtype == torch.uint8
    epoch2 = all_batches(first)
    # a checkpoint round trip, as CheckpointStore does it
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    restored = shapes.loader("train", 64, shuffle=True, augment=True, seed=999)
    restored.load_state_dict(torch.load(buf, weights_only=True))
    assert restored.epoch == 1
    for (xa, ya), (xb, yb) in zip(epoch2, all_batches(restored), strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_loaders_share_device_copies(digits: DataSplits) -> None:
    a = digits.loader("train", 8, shuffle=False, augment=False)
    b = digits.loader("train", 16, shuffle=True, augment=True)
    assert a.x is b.x and a.x.dtype == torch.uint8
    copy = pickle.loads(pickle.dumps(digits))
    assert copy.sizes() == digits.sizes() and copy._on_device == {}


# ----------------------------------------------------------------------------------------------- augmentation


def test_crop_flip_identity_and_shift() -> None:
    x = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    pad = crop_pad(8)
    assert pad == 1 and crop_pad(32) == 4 and crop_pad(4) == 1
    centre = torch.full((5, 2), pad)
    no = torch.zeros(5, dtype=torch.bool)
    assert torch.equal(crop_flip(x, centre, no, pad), x)
    flipped = crop_flip(x, centre, ~no, pad)
    assert torch.equal(flipped, x.flip(-1))
    # offset (0, 0): content moves one pixel right and down, with zeros coming in
    shifted = crop_flip(x, torch.zeros(5, 2, dtype=torch.int64), no, pad)
    assert torch.equal(shifted[:, :, 1:, 1:], x[:, :, :-1, :-1])
    assert int(shifted[:, :, 0, :].abs().sum()) == 0 and int(shifted[:, :, :, 0].abs().sum()) == 0
    # (B, H, W) masks go through the same gather
    masks = torch.randint(0, 7, (5, 8, 8))
    assert torch.equal(crop_flip(masks, centre, ~no, pad), masks.flip(-1))


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 4), st.integers(0, 2), st.integers(0, 2), st.booleans())
def test_crop_flip_matches_reference(batch: int, dy: int, dx: int, flip: bool) -> None:
    x = torch.arange(batch * 2 * 8 * 8).view(batch, 2, 8, 8)
    pad = 1
    out = crop_flip(x, torch.tensor([[dy, dx]] * batch), torch.tensor([flip] * batch), pad)
    ref = torch.nn.functional.pad(x, (pad,) * 4)[:, :, dy : dy + 8, dx : dx + 8]
    assert torch.equal(out, ref.flip(-1) if flip else ref)


def test_augmentation_crops_and_flips_about_half(tmp_path: Path) -> None:
    n, size = 2000, 16
    data = toy(ramps(n, size))
    plain = torch.cat([x for x, _ in data.loader("train", 500, shuffle=False, augment=False)])
    aug = torch.cat([x for x, _ in data.loader("train", 500, shuffle=False, augment=True, seed=1)])
    assert aug.shape == plain.shape == (n, 1, size, size) and aug.dtype == torch.float32
    middle = aug[:, 0, size // 2, 2 : size - 2]  # a row away from the padding
    increasing = (middle.diff(dim=1) > 0).all(dim=1)
    decreasing = (middle.diff(dim=1) < 0).all(dim=1)
    assert bool((increasing | decreasing).all())
    assert 0.44 < float(decreasing.float().mean()) < 0.56
    shifted = (aug != plain.flip(-1)) & (aug != plain)
    assert float(shifted.flatten(1).any(dim=1).float().mean()) > 0.5  # crops move content
    zeros = (aug == 0).flatten(1).any(dim=1)  # zero padding enters crops that are off centre
    assert 0.5 < float(zeros.float().mean()) < 1.0


def test_no_flip_when_dataset_forbids(digits: DataSplits) -> None:
    data = dataclasses.replace(digits, train=Split(x=ramps(1000), y=torch.zeros(1000, dtype=torch.int64)))
    assert data.flip_ok is False
    for x, _ in data.loader("train", 250, shuffle=True, augment=True, seed=4):
        row = x[:, 0, 8, 2:14]
        assert bool((row.diff(dim=1) > 0).all())


def test_masks_follow_their_images() -> None:
    masks = torch.randint(0, 5, (300, 16, 16))
    x = (masks * 40 + 10).to(torch.uint8).unsqueeze(1)  # background 10, padding 0
    data = dataclasses.replace(toy(x), train=Split(x=x, y=torch.zeros(300, dtype=torch.int64), masks=masks))
    loader = data.loader("train", 64, shuffle=True, augment=True, seed=2)
    seen = 0
    for xb, _, mb in loader.with_masks():
        pixels = xb[:, 0].round().long()
        assert torch.equal(pixels == 0, torch.zeros_like(mb, dtype=torch.bool) | (pixels == 0))
        inside = pixels > 0
        assert torch.equal((pixels[inside] - 10) // 40, mb[inside])
        assert bool((mb[~inside] == 0).all())
        seen += len(xb)
    assert seen == len(loader) * 64
    with pytest.raises(ValueError, match="masks"):
        next(toy(x).loader("train", 8, shuffle=False, augment=False).with_masks())


# ----------------------------------------------------------------------------------------------- CIFAR


def write_cifar10(folder: Path, per_batch: int = 20, protocol: int = 2, byte_keys: bool = False) -> np.ndarray:
    """A fake cifar-10-batches-py: 5 training batches, a test batch, the meta file. Returns the first image."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def key(k: str) -> Any:
        return k.encode() if byte_keys else k

    first = None
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        first = data[0] if first is None else first
        labels = [i % 10 for i in range(per_batch)]
        batch = {key("batch_label"): key(name), key("data"): data, key("labels"): labels}
        batch[key("filenames")] = [key(f"img{i}.png") for i in range(per_batch)]
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    names = [key(n) for n in ["plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]]
    meta = {key("label_names"): names, key("num_vis"): 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    assert first is not None
    return first


@pytest.mark.parametrize(("protocol", "byte_keys"), [(2, False), (5, False), (2, True)])
def test_cifar10_from_folder_and_parent(tmp_path: Path, protocol: int, byte_keys: bool) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    first = write_cifar10(folder, protocol=protocol, byte_keys=byte_keys)
    for path in (folder, tmp_path):
        data = load_dataset(DatasetSpec(name="cifar10", path=str(path), val_fraction=0.2))
        assert (data.num_classes, data.channels, data.image_size) == (10, 3, 32)
        assert data.sizes() == {"train": 80, "val": 20, "test": 20}
        assert data.class_names[0] == "plane" and data.class_names[9] == "truck"
        assert data.val.y.bincount(minlength=10).tolist() == [2] * 10
    full = load_dataset(DatasetSpec(name="cifar10", path=str(folder), val_fraction=0.01))
    images = torch.cat([full.train.x, full.val.x]).flatten(1).numpy()
    assert any(np.array_equal(row, first) for row in images)  # channel-planar rows become (3, 32, 32) unchanged
    r, g = first[:1024].reshape(32, 32), first[1024:2048].reshape(32, 32)
    match = next(i for i, row in enumerate(images) if np.array_equal(row, first))
    img = torch.cat([full.train.x, full.val.x])[match]
    assert np.array_equal(img[0].numpy(), r) and np.array_equal(img[1].numpy(), g)


def test_cifar_resize_and_limit(tmp_path: Path) -> None:
    write_cifar10(tmp_path / "cifar-10-batches-py")
    data = load_dataset(DatasetSpec(name="cifar10", path=str(tmp_path), image_size=16, limit=30))
    assert data.train.x.shape == (30, 3, 16, 16) and data.test.x.shape == (20, 3, 16, 16)
    assert data.image_size == 16


def test_cifar100(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name, n in (("train", 200), ("test", 100)):
        batch = {
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "fine_labels": [i % 100 for i in range(n)],
            "coarse_labels": [i % 20 for i in range(n)],
        }
        (folder / name).write_bytes(pickle.dumps(batch))
    names = [f"class{i}" for i in range(100)]
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": names, "coarse_label_names": names[:20]}))
    data = load_dataset(DatasetSpec(name="cifar100", path=str(tmp_path), val_fraction=0.1))
    assert data.num_classes == 100 and data.class_names[42] == "class42"
    assert data.sizes() == {"train": 180, "val": 20, "test": 100}


def py2_pickle(data: np.ndarray, labels: list[int]) -> bytes:
    """A batch pickled the way Python 2 with numpy 1 wrote the official CIFAR files: ``numpy.core`` globals and the
    array bytes as a Python 2 str (BINSTRING opcode), written opcode by opcode."""

    def text(value: str) -> bytes:  # SHORT_BINSTRING
        raw = value.encode("latin1")
        return b"U" + bytes([len(raw)]) + raw

    def num(n: int) -> bytes:  # BININT
        return b"J" + struct.pack("<i", n)

    raw = data.tobytes()
    out = b"\x80\x02}(" + text("data")
    out += b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + num(0) + b"\x85" + text("b") + b"\x87R"
    out += b"(" + num(1) + num(data.shape[0]) + num(data.shape[1]) + b"\x86"
    out += b"cnumpy\ndtype\n" + text("u1") + num(0) + num(1) + b"\x87R"
    out += b"(" + num(3) + text("|") + b"NNN" + num(-1) + num(-1) + num(0) + b"tb"
    out += b"\x89T" + struct.pack("<I", len(raw)) + raw + b"tb"
    out += text("labels") + b"](" + b"".join(num(v) for v in labels) + b"eu."
    return out


def test_cifar10_python2_pickles(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(2)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batches[name] = rng.integers(0, 256, (10, 3072), dtype=np.uint8)
        (folder / name).write_bytes(py2_pickle(batches[name], list(range(10))))
    data = load_dataset(DatasetSpec(name="cifar10", path=str(folder), val_fraction=0.2))
    assert data.sizes() == {"train": 40, "val": 10, "test": 10}
    assert data.class_names == [str(i) for i in range(10)]  # no batches.meta: numbered classes
    assert np.array_equal(data.test.x.flatten(1).numpy(), batches["test_batch"])


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


class _Eval:
    def __reduce__(self) -> tuple[Any, ...]:
        return (eval, ("__import__('os').getcwd()",))


@pytest.mark.parametrize("payload", ["system", "eval", "nested"])
def test_malicious_pickle_is_refused_without_running(tmp_path: Path, payload: str) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder)
    marker = tmp_path / "pwned"
    evil: Any = {"system": _Evil(marker), "eval": _Eval()}.get(payload)
    if payload == "nested":
        evil = {"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1], "x": [_Evil(marker)]}
    (folder / "data_batch_3").write_bytes(pickle.dumps(evil, protocol=2))
    with pytest.raises(InvalidInput) as info:
        load_dataset(DatasetSpec(name="cifar10", path=str(folder)))
    assert info.value.field == "dataset.path" and "not allowed" in info.value.message
    assert not marker.exists()


def test_cifar_bad_folders(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="does not exist"):
        load_dataset(DatasetSpec(name="cifar10", path=str(tmp_path / "nope")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInput, match="data_batch_1") as info:
        load_dataset(DatasetSpec(name="cifar10", path=str(tmp_path / "empty")))
    assert info.value.field == "dataset.path"
    (tmp_path / "file.bin").write_bytes(b"x")
    with pytest.raises(InvalidInput, match="not a folder"):
        load_dataset(DatasetSpec(name="cifar100", path=str(tmp_path / "file.bin")))
    broken = tmp_path / "broken" / "cifar-10-batches-py"
    write_cifar10(broken)
    (broken / "test_batch").write_bytes(b"\x80\x02garbage")
    with pytest.raises(InvalidInput, match="test_batch"):
        load_dataset(DatasetSpec(name="cifar10", path=str(broken)))


# ----------------------------------------------------------------------------------------------- paths


def test_roots_restrict_paths(tmp_path: Path) -> None:
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    write_cifar10(outside / "cifar-10-batches-py")
    write_cifar10(allowed / "cifar-10-batches-py")
    ok = load_dataset(DatasetSpec(name="cifar10", path=str(allowed)), roots=[allowed])
    assert len(ok.train) == 80
    for path in (outside, allowed / ".." / "outside", Path("/etc")):
        with pytest.raises(InvalidInput, match="outside the allowed dataset roots") as info:
            load_dataset(DatasetSpec(name="cifar10", path=str(path)), roots=[allowed])
        assert info.value.field == "dataset.path"
    (allowed / "link").symlink_to(outside)
    with pytest.raises(InvalidInput, match="outside the allowed"):
        load_dataset(DatasetSpec(name="cifar10", path=str(allowed / "link")), roots=[allowed])
    # a symlinked file inside an allowed folder is refused too
    inner = allowed / "cifar-10-batches-py"
    (inner / "data_batch_2").unlink()
    (inner / "data_batch_2").symlink_to(outside / "cifar-10-batches-py" / "data_batch_2")
    with pytest.raises(InvalidInput, match="outside the allowed"):
        load_dataset(DatasetSpec(name="cifar10", path=str(allowed)), roots=[allowed])
    with pytest.raises(InvalidInput, match="outside the allowed"):  # outside paths are refused before any check
        load_dataset(DatasetSpec(name="npz", path=str(tmp_path / "missing.npz")), roots=[allowed])


# ----------------------------------------------------------------------------------------------- imagefolder


def write_images(folder: Path, classes: dict[str, int], size: tuple[int, int] = (20, 12), mode: str = "RGB") -> None:
    for i, (name, count) in enumerate(classes.items()):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for j in range(count):
            colour: Any = (i * 60, j * 10, 200) if mode == "RGB" else i * 60
            ext = "png" if j % 2 == 0 else "jpg"
            Image.new(mode, size, colour).save(folder / name / f"{j}.{ext}")


def test_imagefolder_with_split_folders(tmp_path: Path) -> None:
    write_images(tmp_path / "train", {"cat": 10, "dog": 10, "emu": 10})
    write_images(tmp_path / "val", {"cat": 2, "dog": 2})
    write_images(tmp_path / "test", {"cat": 3, "dog": 3, "emu": 3}, mode="L")
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    data = load_dataset(DatasetSpec(name="imagefolder", path=str(tmp_path), image_size=16))
    assert data.class_names == ["cat", "dog", "emu"] and data.num_classes == 3
    assert data.sizes() == {"train": 30, "val": 4, "test": 9}
    assert data.train.x.shape == (30, 3, 16, 16) and data.test.x.shape[1] == 3  # grey converted to RGB
    dog = data.train.x[data.train.y == 1]
    assert bool((dog[:, 0].float() - 60).abs().max() < 8) and bool((dog[:, 2].float() - 200).abs().max() < 8)


def test_imagefolder_class_folders_only(tmp_path: Path) -> None:
    write_images(tmp_path, {"a": 20, "b": 20})
    (tmp_path / ".hidden").mkdir()
    data = load_dataset(DatasetSpec(name="imagefolder", path=str(tmp_path), val_fraction=0.25, limit=10))
    assert data.image_size == 32 and data.class_names == ["a", "b"]
    assert data.sizes() == {"train": 10, "val": 9, "test": 6}
    assert data.train.y.bincount().tolist() == [5, 5]


def test_imagefolder_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="holds no images"):
        load_dataset(DatasetSpec(name="imagefolder", path=str(tmp_path)))
    write_images(tmp_path / "train", {"a": 3})
    write_images(tmp_path / "val", {"zebra": 1})
    with pytest.raises(InvalidInput, match="zebra"):
        load_dataset(DatasetSpec(name="imagefolder", path=str(tmp_path)))
    bad = tmp_path / "bad"
    write_images(bad, {"a": 5})
    (bad / "a" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(InvalidInput, match=r"broken\.png"):
        load_dataset(DatasetSpec(name="imagefolder", path=str(bad)))


# ----------------------------------------------------------------------------------------------- npz


def test_npz_nhwc_uint8_with_all_splits(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    x = rng.integers(0, 256, (50, 12, 12, 3), dtype=np.uint8)
    np.savez(
        path,
        x_train=x,
        y_train=np.arange(50) % 4,
        x_val=x[:8],
        y_val=np.arange(8) % 4,
        x_test=x[:6],
        y_test=np.arange(6) % 4,
        class_names=np.array(["w", "x", "y", "z"]),
    )
    data = load_dataset(DatasetSpec(name="npz", path=str(path)))
    assert data.sizes() == {"train": 50, "val": 8, "test": 6}
    assert (data.image_size, data.channels, data.num_classes) == (12, 3, 4)
    assert data.class_names == ["w", "x", "y", "z"]
    assert torch.equal(data.train.x, torch.from_numpy(x).permute(0, 3, 1, 2))


def test_npz_nchw_float_split_here(tmp_path: Path) -> None:
    path = tmp_path / "f.npz"
    x = np.random.default_rng(1).random((100, 1, 10, 10)).astype(np.float32)
    np.savez(path, x_train=x, y_train=np.arange(100) % 5)
    data = load_dataset(DatasetSpec(name="npz", path=str(path), image_size=8, val_fraction=0.2))
    assert data.sizes() == {"train": 68, "val": 17, "test": 15}
    assert data.train.x.shape[1:] == (1, 8, 8) and data.num_classes == 5
    assert int(data.train.x.max()) > 200


def test_npz_errors(tmp_path: Path) -> None:
    cases: dict[str, dict[str, np.ndarray]] = {
        "needs arrays x_train": {"images": np.zeros((4, 8, 8), np.uint8)},
        r"\[0, 1\]": {"x_train": np.full((4, 8, 8), 2.0), "y_train": np.zeros(4, np.int64)},
        "integer labels": {"x_train": np.zeros((4, 8, 8), np.uint8), "y_train": np.zeros(3, np.int64)},
        "C in 1 or 3": {"x_train": np.zeros((4, 5, 8, 8), np.uint8), "y_train": np.zeros(4, np.int64)},
    }
    for message, arrays in cases.items():
        path = tmp_path / "bad.npz"
        np.savez(path, **arrays)  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match=message):
            load_dataset(DatasetSpec(name="npz", path=str(path)))
    objects = tmp_path / "obj.npz"
    np.savez(objects, x_train=np.array([{"a": 1}], dtype=object), y_train=np.zeros(1, np.int64))
    with pytest.raises(InvalidInput, match="pickle"):
        load_dataset(DatasetSpec(name="npz", path=str(objects)))
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(InvalidInput):
        load_dataset(DatasetSpec(name="npz", path=str(text)))
    with pytest.raises(InvalidInput, match="not a file"):
        load_dataset(DatasetSpec(name="npz", path=str(tmp_path)))
