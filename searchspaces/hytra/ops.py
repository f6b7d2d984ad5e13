"""HyTra's ops: ResConv (bottleneck residual conv) and ResAtt (BoTNet-style residual self-attention).

Both ops take their input through one of up to two *input branches* and share the rest:

- ``inputs["same"]``: an input at the op's resolution; ``inputs["down"]``: an input at the next-higher resolution,
  halved by the branch (stride 2). A branch is ``conv 1x1 (c_in -> planes) -> PEG (depthwise 3x3 with bias, the
  branch's stride; the only positional signal) -> BN`` plus its shortcut.
- Shortcuts (``shortcut="search"``, the search space): identity when the shapes match, else 1x1 conv + BN + act
  (same resolution) or 3x3 conv stride 2 + BN + act (down branch). ``shortcut="resnet_d"`` (BossNet retraining):
  [2x2 average pool stride 2 when halving] + 1x1 conv + BN on a stride or width change.
- ResConv body: act -> 3x3 conv (planes) -> BN -> act -> 1x1 conv (planes -> C) -> BN (gamma zero-initialised)
  [-> SE] [-> drop path] -> + shortcut -> act.
- ResAtt body: act -> multi-head self-attention over all H*W tokens -> BN -> act -> 1x1 conv (-> C) -> BN (gamma
  zero-initialised) -> + shortcut -> act.

A supernet layer builds both branches and shares the body between them (BossNAS's weight sharing); a standalone
network builds the one branch its path uses, under the same module names, so extraction is a copy by name.
Imports only ``torch`` and ``nas.ops`` (standalone export).
"""

from torch import Tensor, nn
from torch.nn import functional as F

from nas.ops.drop import drop_path
from nas.ops.se import SqueezeExcitation, activation_layer, resnet_se_hidden

BRANCHES = ("same", "down")


class MultiHeadSelfAttention2d(nn.Module):
    """Global multi-head self-attention over the H*W positions of a feature map (BoTNet without position bias).

    ``qkv``: one 1x1 conv without bias to 3 * heads * head_dim channels, laid out [q | k | v], each head-major.
    ``out = softmax(q k^T * head_dim^-0.5) v`` per head, softmax over the keys; heads are concatenated back into
    channels. (BossNAS's search code aggregated with the transposed matrix, ``v @ attn``; this is the corrected
    form.) Written with plain matrix products so FLOP counters and every exporter see it.
    """

    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = head_dim
        self.scale = head_dim**-0.5
        self.qkv = nn.Conv2d(dim, 3 * heads * head_dim, 1, bias=False)

    def split_qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q, k, v of shape (N, heads, H*W, head_dim)."""
        n, _, h, w = x.shape
        qkv = self.qkv(x).reshape(n, 3, self.heads, self.head_dim, h * w).transpose(-2, -1)
        return qkv[:, 0], qkv[:, 1], qkv[:, 2]

    def forward(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        q, k, v = self.split_qkv(x)
        attn = F.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)  # (N, heads, queries, keys)
        out = attn @ v  # (N, heads, H*W, head_dim)
        return out.transpose(-2, -1).reshape(n, self.heads * self.head_dim, h, w)


def conv_bn_act(c_in: int, c_out: int, kernel_size: int, stride: int, activation: str) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size, stride, kernel_size // 2, bias=False),
        nn.BatchNorm2d(c_out),
        activation_layer(activation),
    )


def make_shortcut(c_in: int, c_out: int, stride: int, activation: str, kind: str) -> nn.Module:
    """The residual path of an input branch (see the module docstring)."""
    if stride not in (1, 2):
        raise ValueError(f"stride must be 1 or 2, got {stride}")
    if kind == "search":
        if stride == 2:
            return conv_bn_act(c_in, c_out, 3, 2, activation)
        if c_in != c_out:
            return conv_bn_act(c_in, c_out, 1, 1, activation)
        return nn.Identity()
    if kind == "resnet_d":
        if stride == 1 and c_in == c_out:
            return nn.Identity()
        pool: nn.Module = nn.Identity()
        if stride == 2:
            pool = nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)
        return nn.Sequential(pool, nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
    raise ValueError(f"unknown shortcut kind {kind!r}; allowed: search, resnet_d")


class InputBranch(nn.Module):
    """conv 1x1 (c_in -> planes) -> PEG depthwise 3x3 (stride, with bias) -> BN, and the shortcut."""

    def __init__(self, c_in: int, planes: int, c_out: int, stride: int, activation: str, shortcut: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, planes, 1, bias=False)
        self.peg = nn.Conv2d(planes, planes, 3, stride, 1, groups=planes, bias=True)
        self.bn = nn.BatchNorm2d(planes)
        self.shortcut = make_shortcut(c_in, c_out, stride, activation, shortcut)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.bn(self.peg(self.conv(x))), self.shortcut(x)


class HyTraOp(nn.Module):
    """Common part of ResConv and ResAtt: the input branches, the residual add and the final activation.

    ``inputs`` maps a branch name ('same' or 'down') to its input channels. ``forward(x, branch)``: ``branch`` may
    be omitted when the op has one branch.
    """

    def __init__(self, inputs: dict[str, int], planes: int, c_out: int, activation: str, shortcut: str) -> None:
        super().__init__()
        if not inputs or any(b not in BRANCHES for b in inputs):
            raise ValueError(f"inputs must map some of {BRANCHES} to channels, got {inputs}")
        self.out_channels = c_out
        self.inputs = nn.ModuleDict(
            {
                b: InputBranch(c_in, planes, c_out, 2 if b == "down" else 1, activation, shortcut)
                for b, c_in in inputs.items()
            }
        )
        self.single_branch = next(iter(inputs)) if len(inputs) == 1 else ""
        self.out_act = activation_layer(activation)

    def body(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor, branch: str = "") -> Tensor:
        main, residual = self.inputs[branch or self.single_branch](x)
        return self.out_act(self.body(main) + residual)


class ResConv(HyTraOp):
    """Bottleneck residual conv: the shared body is act -> 3x3 conv -> BN -> act -> 1x1 conv -> BN(0) [-> SE]
    [-> drop path]."""

    def __init__(
        self,
        inputs: dict[str, int],
        planes: int,
        c_out: int,
        activation: str = "relu",
        shortcut: str = "search",
        se: bool = False,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__(inputs, planes, c_out, activation, shortcut)
        self.act1 = activation_layer(activation)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = activation_layer(activation)
        self.conv3 = nn.Conv2d(planes, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        nn.init.zeros_(self.bn3.weight)
        self.se = SqueezeExcitation(c_out, resnet_se_hidden(c_out), "relu") if se else None
        self.drop_path_rate = float(drop_path_rate)

    def body(self, x: Tensor) -> Tensor:
        x = self.act2(self.bn2(self.conv2(self.act1(x))))
        x = self.bn3(self.conv3(x))
        if self.se is not None:
            x = self.se(x)
        if self.drop_path_rate > 0.0:
            x = drop_path(x, 1.0 - self.drop_path_rate, self.training)
        return x


class ResAtt(HyTraOp):
    """Residual self-attention: the shared body is act -> MHSA (``heads`` x ``head_dim`` = planes) -> BN -> act ->
    1x1 conv -> BN(0)."""

    def __init__(
        self,
        inputs: dict[str, int],
        planes: int,
        c_out: int,
        heads: int,
        head_dim: int,
        activation: str = "relu",
        shortcut: str = "search",
    ) -> None:
        super().__init__(inputs, planes, c_out, activation, shortcut)
        self.act1 = activation_layer(activation)
        self.attn = MultiHeadSelfAttention2d(planes, heads, head_dim)
        inner = heads * head_dim
        self.bn2 = nn.BatchNorm2d(inner)
        self.act2 = activation_layer(activation)
        self.conv3 = nn.Conv2d(inner, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        nn.init.zeros_(self.bn3.weight)

    def body(self, x: Tensor) -> Tensor:
        x = self.act2(self.bn2(self.attn(self.act1(x))))
        return self.bn3(self.conv3(x))


class StemAdapter(nn.Sequential):
    """Block 0's entry to level l (search space): depthwise conv with kernel = stride = 2**l (no bias) -> 1x1 conv
    to the level's bottleneck width (no bias) -> BN."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_in, stride, stride, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )


def attention_heads(planes: int, head_dim: int) -> tuple[int, int]:
    """(heads, head dim) for an attention over ``planes`` channels: planes // head_dim heads of head_dim; a single
    head of all channels when planes < head_dim."""
    if planes <= head_dim:
        return 1, planes
    if planes % head_dim:
        raise ValueError(f"{planes} attention channels are not a multiple of the head dim {head_dim}")
    return planes // head_dim, head_dim


def init_weights(module: nn.Module) -> None:
    """Kaiming-normal (fan out, ReLU) convs, unit BN (the zero-initialised last BNs of the ops stay zero)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    for m in module.modules():
        if isinstance(m, ResConv | ResAtt):
            nn.init.zeros_(m.bn3.weight)
