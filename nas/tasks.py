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
- detection: its head (:class:`DetectionHead`: single-scale anchor-free, output (N, classes + 4, h, w)) and loss
  (:class:`DetectionLoss`: focal + L1 on FCOS-assigned locations; it also takes the boxes and the image size); its
  metric (mAP) is not implemented yet, so no search serves it.

Metrics are torchmetrics' (``MulticlassAccuracy``, ``MulticlassJaccardIndex``; detection will take
``MeanAveragePrecision``), behind the small :class:`Metric` interface they share (``update(preds, target)``,
``compute() -> Tensor``, ``reset()``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
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


# --- detection -----------------------------------------------------------------------------------------------------
DETECTION_BOX_CHANNELS = 4
"""Box channels per location of a detection output: log distances to the box's left, top, right and bottom edges,
in units of the output's stride (FCOS)."""


class DetectionHead(nn.Sequential):
    """A single-scale anchor-free head (FCOS / CenterNet style): 3x3 conv -> BN -> ReLU -> 1x1 conv, features
    (N, C, h, w) to (N, num_classes + 4, h, w): per location the class logits (sigmoid, not softmax: no background
    class) and :data:`DETECTION_BOX_CHANNELS` box distances. Spaces with their own heads (FBNetV5) keep this
    output layout."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, num_classes + DETECTION_BOX_CHANNELS, 1),
        )


def detection_targets(
    pred: Tensor, boxes: Sequence[Tensor], image_size: tuple[int, int]
) -> tuple[Tensor, Tensor, Tensor]:
    """FCOS assignment of ``boxes`` (per image a (K, 5) tensor: class, x0, y0, x1, y1 in pixels of an image of
    ``image_size`` (H, W)) to the locations of ``pred`` (N, classes + 4, h, w): a location whose centre lies inside
    a box is positive for it (the smallest box when several hold it). Returns the class targets (N, classes, h, w)
    in {0, 1}, the box targets (N, 4, h, w) as log distances in strides, and the positive mask (N, h, w)."""
    n, channels, h, w = pred.shape
    classes = channels - DETECTION_BOX_CHANNELS
    sy, sx = image_size[0] / h, image_size[1] / w
    ys = (torch.arange(h, device=pred.device, dtype=torch.float32) + 0.5) * sy
    xs = (torch.arange(w, device=pred.device, dtype=torch.float32) + 0.5) * sx
    cy, cx = ys[:, None].expand(h, w), xs[None, :].expand(h, w)
    cls_t = pred.new_zeros((n, classes, h, w), dtype=torch.float32)
    box_t = pred.new_zeros((n, DETECTION_BOX_CHANNELS, h, w), dtype=torch.float32)
    pos = torch.zeros((n, h, w), dtype=torch.bool, device=pred.device)
    for i, b in enumerate(boxes):
        if b.numel() == 0:
            continue
        b = b.to(pred.device, torch.float32)
        dist = torch.stack(
            [cx - b[:, 1, None, None], cy - b[:, 2, None, None], b[:, 3, None, None] - cx, b[:, 4, None, None] - cy],
            dim=1,
        )  # (K, 4, h, w)
        inside = dist.amin(dim=1) > 0
        area = ((b[:, 3] - b[:, 1]) * (b[:, 4] - b[:, 2]))[:, None, None].expand_as(inside)
        area = torch.where(inside, area, torch.full_like(area, float("inf")))
        best = area.argmin(dim=0)  # (h, w)
        hit = inside.any(dim=0)
        chosen = dist.gather(0, best[None, None].expand(1, 4, h, w))[0]
        scale = torch.tensor([sx, sy, sx, sy], device=pred.device)[:, None, None]
        box_t[i] = torch.where(hit, (chosen / scale).clamp_min(1e-3).log(), box_t[i])
        cls = b[best, 0].long().clamp(0, classes - 1)
        cls_t[i].scatter_(0, cls[None], hit[None].float())
        pos[i] = hit
    return cls_t, box_t, pos


class DetectionLoss(nn.Module):
    """Sigmoid focal loss (alpha 0.25, gamma 2) of the class logits over every location plus the L1 loss of the
    box distances at the positive locations, both divided by the number of positives (at least 1), for a
    :class:`DetectionHead`-layout output (N, classes + 4, h, w). ``forward(pred, boxes, image_size)``: see
    :func:`detection_targets`; label smoothing does not apply."""

    def __init__(self, label_smoothing: float = 0.0, alpha: float = 0.25, gamma: float = 2.0) -> None:
        super().__init__()
        self.alpha, self.gamma = alpha, gamma

    def forward(self, pred: Tensor, boxes: Sequence[Tensor], image_size: tuple[int, int]) -> Tensor:
        cls_t, box_t, pos = detection_targets(pred, boxes, image_size)
        logits = pred[:, :-DETECTION_BOX_CHANNELS].float()
        p = logits.sigmoid()
        ce = F.binary_cross_entropy_with_logits(logits, cls_t, reduction="none")
        p_t = p * cls_t + (1 - p) * (1 - cls_t)
        a_t = self.alpha * cls_t + (1 - self.alpha) * (1 - cls_t)
        focal = (a_t * ce * (1 - p_t) ** self.gamma).sum()
        box = (pred[:, -DETECTION_BOX_CHANNELS:].float() - box_t).abs().sum(dim=1)[pos].sum()
        return (focal + box) / pos.sum().clamp_min(1)


def detection_loss(label_smoothing: float = 0.0) -> Any:
    """The detection loss (its call takes the boxes and the image size besides the output: see
    :class:`DetectionLoss`)."""
    return DetectionLoss(label_smoothing)


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
    description="boxes with a class per object: single-scale anchor-free output (N, classes + 4, h, w), focal + L1"
    " loss, COCO-style mAP@[.5:.95] (the metric is not implemented yet)",
    labels=("boxes",),
    metric="map",
    head=DetectionHead,
    loss=detection_loss,
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
