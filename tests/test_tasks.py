"""Tasks (nas.tasks): classification as the trainer trains and scores it, segmentation's loss and mean IoU,
detection declared only, and the check that a search's space, strategy and dataset serve its task."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nas.errors import InvalidInput
from nas.runner import plan_search
from nas.space import get_space
from nas.spec import SearchSpec, TrainSpec
from nas.strategies.base import STRATEGIES, get_strategy
from nas.strategies.random_search import RandomStrategy
from nas.tasks import (
    CLASSIFICATION,
    DETECTION,
    DETECTION_BOX_CHANNELS,
    IGNORE_INDEX,
    SEGMENTATION,
    check_tasks,
    detection_targets,
    get_task,
    mean_iou,
    tasks_with_labels,
)
from nas.train import Trainer, evaluate
from tests.toy_space import ToySpace


class SegToySpace(ToySpace):
    """The toy space claiming segmentation too."""

    name = "toy-seg"
    tasks = ("classification", "segmentation")


class SegOnlyStrategy(RandomStrategy):
    """Random search claiming segmentation only."""

    name = "random-seg-only"
    tasks = ("segmentation",)


@pytest.fixture(autouse=True)
def _seg_only_strategy(monkeypatch: pytest.MonkeyPatch) -> None:
    """SegOnlyStrategy registered for this module's tests only."""
    monkeypatch.setitem(STRATEGIES._items, SegOnlyStrategy.name, SegOnlyStrategy)


# --------------------------------------------------------------------------------------------- classification
def test_classification_is_what_the_trainer_trains_and_scores() -> None:
    assert CLASSIFICATION.implemented and CLASSIFICATION.labels == ("y",) and CLASSIFICATION.metric == "accuracy"
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(32, 4, generator=g), torch.randint(0, 4, (32,), generator=g)
    trainer = Trainer(nn.Linear(4, 4), TrainSpec(label_smoothing=0.1), torch.device("cpu"), 1)
    torch.testing.assert_close(CLASSIFICATION.make_loss(0.1)(logits, y), trainer.criterion(logits, y))

    model = nn.Linear(6, 4)
    batches = [(torch.randn(10, 6, generator=g), torch.randint(0, 4, (10,), generator=g)) for _ in range(3)]
    metric = CLASSIFICATION.make_metrics(num_classes=4)["accuracy"]
    with torch.no_grad():
        for x, target in batches:
            metric.update(model(x), target)
    assert float(metric.compute()) == pytest.approx(evaluate(model, batches, torch.device("cpu"))["accuracy"])
    metric.reset()  # forgets every batch before it
    metric.update(torch.tensor([1, 2]), torch.tensor([1, 2]))
    assert float(metric.compute()) == 1.0


def test_classification_head_maps_features_to_logits() -> None:
    head = CLASSIFICATION.make_head(channels=8, num_classes=5)
    assert head(torch.randn(2, 8, 4, 4)).shape == (2, 5)


# --------------------------------------------------------------------------------------------- segmentation
def test_segmentation_head_and_loss_work_at_the_masks_resolution() -> None:
    assert SEGMENTATION.implemented and SEGMENTATION.num_outputs(6) == 7  # + background
    head = SEGMENTATION.make_head(channels=8, num_classes=6)
    logits = head(torch.randn(2, 8, 4, 4))
    assert logits.shape == (2, 7, 4, 4)
    masks = torch.randint(0, 7, (2, 16, 16))
    loss = SEGMENTATION.make_loss()(logits, masks)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()


def test_segmentation_loss_ignores_marked_pixels() -> None:
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 1] = 5.0  # predicts class 1 everywhere
    right = torch.ones(1, 2, 2, dtype=torch.int64)
    marked = right.clone()
    marked[0, 0, 0] = IGNORE_INDEX
    loss = SEGMENTATION.make_loss()
    torch.testing.assert_close(loss(logits, marked), loss(logits, right))


def test_mean_iou_by_hand() -> None:
    metric = mean_iou(3)
    target = torch.tensor([[[0, 0], [1, 1]]])
    preds = torch.tensor([[[0, 1], [1, 1]]])  # class 0: 1/2, class 1: 2/3, class 2: absent
    metric.update(preds, target)
    assert float(metric.compute()) == pytest.approx((1 / 2 + 2 / 3) / 2)
    metric.update(target, torch.full_like(target, IGNORE_INDEX))  # ignored pixels change nothing
    assert float(metric.compute()) == pytest.approx((1 / 2 + 2 / 3) / 2)
    metric.reset()
    logits = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float()  # perfect, as logits
    metric.update(logits, target)
    assert float(metric.compute()) == 1.0


# --------------------------------------------------------------------------------------------- detection
def test_detection_has_a_head_and_a_loss_but_no_metric_yet() -> None:
    assert get_task("detection") is DETECTION and DETECTION.labels == ("boxes",)
    assert not DETECTION.implemented  # mAP comes later
    with pytest.raises(NotImplementedError):
        DETECTION.make_metrics(3)
    head = DETECTION.make_head(8, 3)
    out = head(torch.randn(2, 8, 4, 4))
    assert out.shape == (2, 3 + DETECTION_BOX_CHANNELS, 4, 4)


def test_detection_targets_follow_fcos_assignment() -> None:
    pred = torch.zeros(1, 2 + DETECTION_BOX_CHANNELS, 4, 4)
    # one box of class 1 covering the top-left 16x16 pixels of a 32x32 image: the 2x2 top-left cells (stride 8)
    cls_t, box_t, pos = detection_targets(pred, [torch.tensor([[1.0, 0.0, 0.0, 16.0, 16.0]])], (32, 32))
    assert pos[0].nonzero().tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert cls_t[0, 1].sum() == 4 and cls_t[0, 0].sum() == 0
    # cell (0, 0) has its centre at (4, 4): distances 4, 4, 12, 12 pixels = 0.5, 0.5, 1.5, 1.5 strides
    assert torch.allclose(box_t[0, :, 0, 0].exp(), torch.tensor([0.5, 0.5, 1.5, 1.5]))
    perfect = torch.cat([(cls_t * 2 - 1) * 20, box_t], dim=1)
    loss = DETECTION.make_loss()
    assert float(loss(perfect, [torch.tensor([[1.0, 0.0, 0.0, 16.0, 16.0]])], (32, 32))) < 1e-3
    assert float(loss(pred, [torch.tensor([[1.0, 0.0, 0.0, 16.0, 16.0]])], (32, 32))) > 0.1


def test_tasks_follow_the_labels_a_dataset_has() -> None:
    assert tasks_with_labels(["y"]) == ("classification",)
    assert tasks_with_labels(["y", "masks", "boxes"]) == ("classification", "detection", "segmentation")


# --------------------------------------------------------------------------------------------- served by
def test_every_packaged_space_and_strategy_serves_classification() -> None:
    from nas.space import SPACES

    for name in SPACES.entry_points():
        assert "classification" in get_space(name).tasks, name
    for name in STRATEGIES.entry_points():
        assert "classification" in get_strategy(name).tasks, name


@pytest.mark.parametrize(
    ("task", "space", "strategy", "dataset", "field"),
    [
        ("captioning", "toyconv", "random", "digits", "task"),  # unknown
        ("detection", "toyconv", "random", "shapes", "task"),  # declared, not implemented
        ("segmentation", "toyconv", "random", "shapes", "space.name"),
        ("segmentation", "toy-seg", "random", "shapes", "strategy.name"),
        ("segmentation", "toy-seg", "random-seg-only", "digits", "dataset.name"),
        ("classification", "toyconv", "random-seg-only", "digits", "strategy.name"),
    ],
)
def test_check_tasks_names_the_part_that_does_not_serve(
    task: str, space: str, strategy: str, dataset: str, field: str
) -> None:
    from nas.data import dataset_info

    spaces = {"toyconv": ToySpace(), "toy-seg": SegToySpace()}
    with pytest.raises(InvalidInput) as info:
        check_tasks([task], space=spaces[space], strategy=get_strategy(strategy), dataset=dataset_info(dataset))
    assert info.value.field == field


def test_check_tasks_accepts_what_is_served() -> None:
    from nas.data import dataset_info

    tasks = check_tasks(
        ["segmentation"], space=SegToySpace(), strategy=SegOnlyStrategy(), dataset=dataset_info("shapes")
    )
    assert tasks == [SEGMENTATION]
    assert check_tasks(["classification"], space=ToySpace, strategy=RandomStrategy) == [CLASSIFICATION]


def test_plan_search_checks_the_implied_classification_task() -> None:
    spec = {"space": {"name": "toyconv"}, "dataset": {"name": "digits"}, "strategy": {"name": "random"}}
    plan_search(SearchSpec.model_validate(spec))
    with pytest.raises(InvalidInput) as info:
        plan_search(SearchSpec.model_validate({**spec, "strategy": {"name": SegOnlyStrategy.name}}))
    assert info.value.field == "strategy.name"
