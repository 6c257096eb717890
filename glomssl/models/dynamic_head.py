"""The class-aware controller and the dynamic head of Glo-In-One v2 (../shared/papers/000, sec. 3.1).

For an image and a task (class) k the controller turns the globally pooled bottleneck feature f (C)
and the task's one-hot code into the parameters theta_k of a tiny per-(image, task) network, the
dynamic head: three 1x1 convs 8 -> 8 -> 8 -> 2 with ReLU between them (64+8 + 64+8 + 16+2 = 162
parameters at the paper's sizes). It runs on the decoder's 8-channel pre-head features, so a new
class costs a new one-hot slot, not a new decoder.

- ``controller="concat"`` is the paper's description: theta = W [f ; onehot_k] + b (one 1x1 conv on
  the concatenation), i.e. an image-dependent part shared by every task plus a learnt per-task offset.
- ``controller="outer"`` is what the public code computes: a 1x1 conv on the outer product
  f x onehot_k, i.e. a separate linear map per task, theta = W_k f + b. It is glomssl's default: on
  a synthetic two-task set (tests/finetune/conftest.py: a "GS" task that is the disk only when it is
  pale) the concat controller, like the multi-head baseline, never learnt to leave non-pale disks
  empty in 200 steps, while the outer product did (validation Dice 1.0 vs 0.0 on that task).

glomssl's departure from the released code: :meth:`DynamicHead.forward_all` evaluates the heads of
ALL K tasks on one set of decoder features, so the encoder-decoder runs once per image instead of
once per (image, class). The two outputs of the last layer are turned into one logit, z1 - z0, so
that sigmoid(logit) equals softmax([z0, z1])[1], the class probability.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from glomssl.errors import GlomsslError


def head_param_count(feat_dim: int = 8, hidden: int = 8, out: int = 2) -> int:
    """Parameters of the 3-layer 1x1 head: 8*8+8 + 8*8+8 + 8*2+2 = 162 at the paper's sizes."""
    return feat_dim * hidden + hidden + hidden * hidden + hidden + hidden * out + out


class Controller(nn.Module):
    """(B, C) pooled features + task ids -> (B, T, P) head parameters for T tasks per image.

    Both kinds have a per-task offset ``task_bias`` (K, P), initialised like an ordinary 3-layer 1x1
    MLP (``init_head``), and an image-dependent part initialised ``cond_init`` times smaller, so every
    task starts as a plain static head and learns how much to adapt to the image.

    The pooled feature is scaled to unit length first. A ResNet bottleneck pools to 512 values of
    norm ~30; unscaled, every AdamW step moved each generated parameter by up to lr x ||f||_1 (about
    1 at lr 2e-3), and the dynamic head on the ResNet-18 encoder never left the all-foreground
    answer on the real Tuft task (validation Dice 0.862 = the prior after 90 steps; 0.918 with the
    scaling, docs/experiments/segmenter.md). ``normalise=False`` is the earlier behaviour, kept so that
    segmenters trained before the change (whose model.json lacks ``unit_pooled``) load unchanged. (With the image
    part at full size and no per-task offset, the heads of different tasks start as near copies and
    the dynamic model stayed at the all-foreground solution for 400 steps on the real Tuft/GS tasks,
    while a multi-head network left it within 200.)
    """

    def __init__(
        self,
        in_dim: int,
        num_tasks: int,
        num_params: int,
        kind: str = "outer",
        init_head: Callable[[], torch.Tensor] | None = None,
        cond_init: float = 0.1,
        normalise: bool = True,
    ) -> None:
        super().__init__()
        if kind not in ("concat", "outer"):
            raise GlomsslError(f"controller {kind!r} must be concat or outer")
        self.kind = kind
        self.num_tasks = num_tasks
        self.normalise = normalise
        # the image part starts cond_init x smaller than a head: |f| is 1 (normalise) or ~sqrt(C)
        bound = cond_init if normalise else cond_init * in_dim**-0.5
        if kind == "concat":  # theta = W_f f + (W_t onehot_k + b): the paper's concatenation
            self.weight = nn.Parameter(torch.empty(num_params, in_dim).uniform_(-bound, bound))
        else:  # theta = W_k f + b_k: a 1x1 conv on the outer product f x onehot_k (public code)
            self.weight = nn.Parameter(
                torch.empty(num_tasks, num_params, in_dim).uniform_(-bound, bound)
            )
        init = [init_head() if init_head else torch.zeros(num_params) for _ in range(num_tasks)]
        self.task_bias = nn.Parameter(torch.stack(init))  # (K, P)

    def forward(self, pooled: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        """``pooled`` (B, C); ``tasks`` (B, T) long task ids -> (B, T, P) parameters."""
        if self.normalise:  # unit length: see the class docstring
            pooled = nn.functional.normalize(pooled, dim=-1)
        if self.kind == "concat":
            return (pooled @ self.weight.T)[:, None, :] + self.task_bias[tasks]  # (B, T, P)
        w = self.weight[tasks]  # (B, T, P, C)
        return torch.einsum("btpc,bc->btp", w, pooled) + self.task_bias[tasks]  # (B, T, P)


class DynamicHead(nn.Module):
    """Applies generated 1x1-conv stacks: features (B, D, H, W) + params (B, T, P) -> (B, T, H, W).

    The three layers are batched over (image, task) with einsum, which is the same computation as
    GIO2's grouped convolution (one group per (image, task)); the test suite checks it against an
    explicit per-sample loop of ``F.conv2d`` calls.
    """

    def __init__(self, feat_dim: int = 8, hidden: int = 8, out: int = 2) -> None:
        super().__init__()
        self.feat_dim, self.hidden, self.out = feat_dim, hidden, out
        self.num_params = head_param_count(feat_dim, hidden, out)

    def init_params(self) -> torch.Tensor:
        """(P,) parameters of a freshly initialised 3-layer 1x1 MLP (PyTorch's conv bounds)."""
        parts = []
        shapes = [(self.hidden, self.feat_dim), (self.hidden, self.hidden), (self.out, self.hidden)]
        for co, ci in shapes:
            bound = ci**-0.5
            parts.append(torch.empty(co * ci).uniform_(-bound, bound))
            parts.append(torch.empty(co).uniform_(-bound, bound))
        return torch.cat(parts)

    def split(self, params: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(..., P) -> [(w1 (..., h, d), b1 (..., h)), (w2 (..., h, h), b2), (w3 (..., o, h), b3)]."""
        d, h, o = self.feat_dim, self.hidden, self.out
        shapes = [(h, d), (h, h), (o, h)]
        out, i = [], 0
        lead = params.shape[:-1]
        for co, ci in shapes:
            w = params[..., i : i + co * ci].reshape(*lead, co, ci)
            i += co * ci
            b = params[..., i : i + co]
            i += co
            out.append((w, b))
        return out

    def forward(self, feats: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """``feats`` (B, D, H, W), ``params`` (B, T, P) -> (B, T, H, W) logits (z1 - z0)."""
        (w1, b1), (w2, b2), (w3, b3) = self.split(params)
        y = torch.einsum("btoi,bihw->btohw", w1, feats) + b1[..., None, None]  # (B, T, h, H, W)
        y = torch.relu(y)
        y = torch.einsum("btoi,btihw->btohw", w2, y) + b2[..., None, None]  # (B, T, h, H, W)
        y = torch.relu(y)
        y = torch.einsum("btoi,btihw->btohw", w3, y) + b3[..., None, None]  # (B, T, o, H, W)
        if self.out == 1:
            return y[:, :, 0]
        return y[:, :, 1] - y[:, :, 0]  # (B, T, H, W): sigmoid of it = softmax(z)[1]
