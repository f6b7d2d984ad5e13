"""Tasks a searched network serves: classification, segmentation, detection.

A :class:`Task` says what a network outputs for it (its head), how it is trained (its loss), how it is scored (its
metrics; the first, ``metric``, is the one a search maximises) and which labels a dataset must hold per image (fields
of :class:`nas.data.Split`: ``y``, ``masks``, ``boxes``).

Spaces, strategies and datasets declare what they serve: ``SearchSpace.tasks`` and ``Strategy.tasks`` (both
``("classification",)`` unless a class says otherwise) and a dataset's label fields. :func:`check_tasks` refuses a
search whose parts do not all serve the requested tasks, naming the spec field to change. A spec has no task field
yet: it asks for classification (:data:`DEFAULT_TASKS`).

- classification: complete (global-pool + linear head, cross-entropy with label smoothing as the trainer uses,
  top-1 accuracy); every space and strategy serves it.
- segmentation: complete (1x1-conv head, per-pixel cross-entropy, mean IoU) but served by no space yet.
- detection: declares its labels and metric only; FBNetV5 brings its head and loss.

Metrics are torchmetrics' (``MulticlassAccuracy``, ``MulticlassJaccardIndex``; detection will take
``MeanAveragePrecision``), behind the small :class:`Metric` interface they share (``update(preds, target)``,
``compute() -> Tensor``, ``reset()``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch.nn.functional as F
from torch import Tensor, nn

from nas.errors import InvalidInput
from nas.registry import Registry

IGNORE_INDEX = 255
"""Mask value of pixels that neither the segmentation loss nor its metric count."""


class Metric(Protocol):
    """A streaming metric (torchmetrics' interface): ``update`` per batch, ``compute`` over all batches since
    ``reset``."""

    def update(self, preds: Tensor, target: Tensor) -> None: ...

    def compute(self) -> Tensor: ...

    def reset(self) -> None: ...


Loss = Callable[[Tensor, Tensor], Tensor]
"""(network output, labels) -> a scalar to minimise."""
HeadFactory = Callable[[int, int], nn.Module]
"""(feature channels, number of outputs) -> a module from backbone features (N, C, H, W) to the task's output."""
LossFactory = Callable[[float], Loss]
"""label smoothing -> the task's loss."""
MetricFactory = Callable[[int], Metric]
"""number of outputs -> a fresh metric."""


# --- classification ------------------------------------------------------------------------------------------------
class ClassificationHead(nn.Sequential):
    """Global average pool -> dropout -> linear: features (N, C, H, W) to logits (N, num_classes)."""

    def __init__(self, channels: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Dropout(dropout), nn.Linear(channels, num_classes))


def classification_loss(label_smoothing: float = 0.0) -> Loss:
    """Cross-entropy of logits (N, C) against labels (N,), as :class:`nas.train.Trainer` trains with."""
    return nn.CrossEntropyLoss(label_smoothing=label_smoothing)


def accuracy(num_classes: int) -> Metric:
    """Top-1 accuracy over every example since ``reset`` (torchmetrics' ``MulticlassAccuracy``, micro average):
    ``preds`` logits (N, C) or labels (N,), ``target`` (N,). Computes what :func:`nas.train.evaluate` reports as
    ``accuracy``."""
    from torchmetrics.classification import MulticlassAccuracy  # imported on use: torchmetrics loads slowly

    return MulticlassAccuracy(num_classes, average="micro")


# --- segmentation --------------------------------------------------------------------------------------------------
class SegmentationHead(nn.Sequential):
    """1x1 conv -> BN -> ReLU -> 1x1 conv: features (N, C, h, w) to per-pixel logits (N, num_classes, h, w) at the
    features' resolution (the loss and the metric resize them to the mask's)."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__(
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, num_classes, 1),
        )


def to_mask_size(logits: Tensor, mask: Tensor) -> Tensor:
    """Per-pixel logits (N, C, h, w) resized (bilinear) to the mask's (N, H, W) resolution."""
    if logits.shape[-2:] == mask.shape[-2:]:
        return logits
    return F.interpolate(logits, size=mask.shape[-2:], mode="bilinear", align_corners=False)


class SegmentationLoss(nn.Module):
    """Per-pixel cross-entropy of logits (N, C, h, w), resized to the masks, against masks (N, H, W); pixels marked
    :data:`IGNORE_INDEX` do not count."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: Tensor, mask: Tensor) -> Tensor:
        return F.cross_entropy(
            to_mask_size(logits, mask).float(), mask, ignore_index=IGNORE_INDEX, label_smoothing=self.label_smoothing
        )


class MaskResized:
    """A per-pixel metric fed logits at the features' resolution (N, C, h, w): they are resized to the masks'
    (N, H, W) before the metric sees them; labels (N, H, W) pass as they are."""

    def __init__(self, metric: Metric) -> None:
        self.metric = metric

    def update(self, preds: Tensor, target: Tensor) -> None:
        self.metric.update(to_mask_size(preds, target) if preds.dim() == 4 else preds, target)

    def compute(self) -> Tensor:
        return self.metric.compute()

    def reset(self) -> None:
        self.metric.reset()


def mean_iou(num_classes: int, ignore_index: int = IGNORE_INDEX) -> Metric:
    """Mean intersection over union over the classes that occur (in the masks or the predictions) since ``reset``
    (torchmetrics' ``MulticlassJaccardIndex``, macro average); pixels marked :data:`IGNORE_INDEX` do not count."""
    from torchmetrics.classification import MulticlassJaccardIndex  # imported on use: torchmetrics loads slowly

    return MaskResized(MulticlassJaccardIndex(num_classes, average="macro", ignore_index=ignore_index))


# --- the task description ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Task:
    """What a network must do for one task (see the module docstring).

    ``labels``: the :class:`nas.data.Split` fields a dataset must hold for it; ``metric``: the metric a search
    maximises (a key of ``metrics`` once the task is implemented); ``background``: the labels have one class more
    than the dataset, class 0 (segmentation masks: 0 is background, class c is c + 1).
    """

    name: str
    description: str
    labels: tuple[str, ...]
    metric: str
    head: HeadFactory | None = None
    loss: LossFactory | None = None
    metrics: Mapping[str, MetricFactory] = field(default_factory=dict)
    background: bool = False

    @property
    def implemented(self) -> bool:
        """Whether the head, the loss and the search metric exist (a task can be declared before it is)."""
        return self.head is not None and self.loss is not None and self.metric in self.metrics

    def num_outputs(self, num_classes: int) -> int:
        """Classes the head predicts for a dataset of ``num_classes`` classes."""
        return num_classes + 1 if self.background else num_classes

    def make_head(self, channels: int, num_classes: int) -> nn.Module:
        """The task's head on features of ``channels`` channels, for a dataset of ``num_classes`` classes."""
        if self.head is None:
            raise NotImplementedError(f"the {self.name!r} task has no head yet")
        return self.head(channels, self.num_outputs(num_classes))

    def make_loss(self, label_smoothing: float = 0.0) -> Loss:
        if self.loss is None:
            raise NotImplementedError(f"the {self.name!r} task has no loss yet")
        return self.loss(label_smoothing)

    def make_metrics(self, num_classes: int) -> dict[str, Metric]:
        """Fresh metrics for a dataset of ``num_classes`` classes, the search metric first."""
        if self.metric not in self.metrics:
            raise NotImplementedError(f"the {self.name!r} task has no {self.metric!r} metric yet")
        names = [self.metric, *(m for m in self.metrics if m != self.metric)]
        return {m: self.metrics[m](self.num_outputs(num_classes)) for m in names}

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "labels": list(self.labels),
            "metric": self.metric,
            "metrics": list(self.metrics),
            "implemented": self.implemented,
        }


CLASSIFICATION = Task(
    name="classification",
    description="one label per image: logits (N, classes), cross-entropy, top-1 accuracy",
    labels=("y",),
    metric="accuracy",
    head=ClassificationHead,
    loss=classification_loss,
    metrics={"accuracy": accuracy},
)
SEGMENTATION = Task(
    name="segmentation",
    description="a class per pixel (0 = background): per-pixel logits, per-pixel cross-entropy, mean IoU",
    labels=("masks",),
    metric="miou",
    head=SegmentationHead,
    loss=SegmentationLoss,
    metrics={"miou": mean_iou},
    background=True,
)
DETECTION = Task(
    name="detection",
    description="boxes with a class per object (COCO-style mAP@[.5:.95]); declared, not implemented yet (FBNetV5)",
    labels=("boxes",),
    metric="map",
)

TASKS: Registry[Task] = Registry("task", field="task", group="nas.tasks")
for _task in (CLASSIFICATION, SEGMENTATION, DETECTION):
    TASKS.register(_task.name, _task)

DEFAULT_TASKS: tuple[str, ...] = ("classification",)
"""The tasks of a spec that names none (every spec today)."""


def get_task(name: str) -> Task:
    """The task called ``name``; InvalidInput('task') listing the allowed names if there is none."""
    return TASKS.get(name)


def task_names() -> list[str]:
    return TASKS.names()


def tasks_with_labels(labels: Sequence[str]) -> tuple[str, ...]:
    """The tasks a dataset holding the label fields ``labels`` can train and score."""
    have = set(labels)
    return tuple(n for n in task_names() if set(get_task(n).labels) <= have)


class ServesTasks(Protocol):
    """Anything that declares the tasks it serves: a space or a strategy (class or instance), a dataset's info."""

    @property
    def name(self) -> str: ...

    @property
    def tasks(self) -> tuple[str, ...]: ...


def check_tasks(
    requested: Sequence[str],
    *,
    space: ServesTasks,
    strategy: ServesTasks,
    dataset: ServesTasks | None = None,
) -> list[Task]:
    """The ``requested`` tasks, once each is known, implemented, and served by the space, the strategy and (when
    given) the dataset. Otherwise InvalidInput naming the field to change: ``task``, ``space.name``,
    ``strategy.name`` or ``dataset.name``."""
    out = []
    for name in requested:
        task = get_task(name)
        if not task.implemented:
            served = ", ".join(n for n in task_names() if get_task(n).implemented)
            raise InvalidInput("task", f"the {name!r} task is declared but not implemented yet; allowed: {served}")
        parts: tuple[tuple[str, ServesTasks | None], ...] = (
            ("space", space),
            ("strategy", strategy),
            ("dataset", dataset),
        )
        for kind, part in parts:
            if part is not None and name not in part.tasks:
                serves = ", ".join(part.tasks) or "no task"
                raise InvalidInput(
                    f"{kind}.name", f"{kind} {part.name!r} does not serve the {name!r} task (it serves {serves})"
                )
        out.append(task)
    return out
