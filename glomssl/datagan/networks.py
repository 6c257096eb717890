"""StyleGAN2 generator and discriminator in plain PyTorch (no custom CUDA kernels).

Written from Karras et al., "Analyzing and Improving the Image Quality of StyleGAN" (StyleGAN2, CVPR
2020) and "Training Generative Adversarial Networks with Limited Data" (ADA, NeurIPS 2020):

- equalised learning rate (ProGAN): weights are stored as N(0, 1) / lr_multiplier and scaled at run
  time by ``lr_multiplier / sqrt(fan_in)``, so Adam sees every layer at the same scale;
- mapping network: z -> normalised 2nd moment -> MLP (lr multiplier 0.01) -> w, a running average of w
  for the truncation trick (StyleGAN, section 3.3 / StyleGAN2 appendix B);
- weight modulation / demodulation (StyleGAN2 eq. 1-3): w'_ijk = s_i w_ijk, w''_ijk = w'_ijk /
  sqrt(sum_ik w'_ijk^2 + eps), implemented as one grouped convolution over the batch (the "fused" path)
  or as input scaling + shared conv + output scaling (the "unfused" path, equal up to rounding);
- per-layer noise inputs with learned strength, a learned constant 4x4 input, and the "skip" generator
  (one toRGB per resolution whose outputs are upsampled and summed, StyleGAN2 figure 7);
- residual discriminator (StyleGAN2 figure 7) with a minibatch standard-deviation layer at 4x4.

Resampling uses the separable [1, 3, 3, 1] low-pass filter (as the papers do). Upsampling convolutions
run as a stride-2 transposed convolution of the (modulated) weights followed by the filter, and the
discriminator's downsampling convolutions filter and then stride, as in the paper's implementation; see
:mod:`glomssl.datagan.resample` (which also keeps the literal zero-insert path as the reference).

Public contract used by ``glomssl datagan`` (see ARCHITECTURE.md): :class:`Generator` with ``z_dim``,
``w_dim``, ``num_ws``, ``img_resolution``, ``img_channels``, ``mapping(z, truncation_psi,
truncation_cutoff)``, ``synthesis(ws, noise_mode, return_features)`` and ``forward(z, truncation_psi,
noise_mode)``; :func:`create_generator` / :func:`create_discriminator` build them from a named config.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from glomssl.datagan.resample import (
    blur2d,
    conv2d_resample,
    conv2d_resample_reference,
    downsample2d,
    upsample2d,
)
from glomssl.errors import GlomsslError

# blur2d / downsample2d / upsample2d are re-exported: older callers import them from here
__all__ = [
    "Discriminator",
    "Generator",
    "blur2d",
    "create_discriminator",
    "create_generator",
    "downsample2d",
    "modulated_conv2d",
    "upsample2d",
]

SQRT2 = math.sqrt(2.0)

# Named channel-width configs. ``channel_base / resolution`` capped at ``channel_max`` gives the feature
# maps per resolution (StyleGAN2-ADA's "fmaps": 0.5 -> base 16384, 1 -> base 32768).
NETWORK_CONFIGS: dict[str, dict[str, Any]] = {
    # Tiny: for CPU tests, benchmarks and smoke runs.
    "small": dict(
        z_dim=64, w_dim=64, mapping_layers=2, channel_base=2048, channel_max=64, mbstd_group=4
    ),
    # The ADA paper's configurations (its table of "paper256/512/1024" settings).
    "paper256": dict(
        z_dim=512, w_dim=512, mapping_layers=8, channel_base=16384, channel_max=512, mbstd_group=4
    ),
    "paper512": dict(
        z_dim=512, w_dim=512, mapping_layers=8, channel_base=32768, channel_max=512, mbstd_group=4
    ),
    "paper1024": dict(
        z_dim=512, w_dim=512, mapping_layers=8, channel_base=32768, channel_max=512, mbstd_group=4
    ),
}
CONFIG_NAMES = ("auto", *NETWORK_CONFIGS)
RESOLUTIONS = (32, 64, 128, 256, 512, 1024)


def resolve_config(cfg: str, resolution: int) -> dict[str, Any]:
    """Network kwargs for a named config; "auto" follows ADA's auto config (2-layer mapping,
    half-width below 512 px, full width from 512 px)."""
    if resolution not in RESOLUTIONS:
        raise GlomsslError(
            f"--resolution {resolution} is not supported; use one of {', '.join(map(str, RESOLUTIONS))}"
        )
    if cfg == "auto":
        return dict(
            z_dim=512,
            w_dim=512,
            mapping_layers=2,
            channel_base=32768 if resolution >= 512 else 16384,
            channel_max=512,
            mbstd_group=4,
        )
    if cfg not in NETWORK_CONFIGS:
        raise GlomsslError(f"--cfg {cfg!r} is unknown; use one of {', '.join(CONFIG_NAMES)}")
    return dict(NETWORK_CONFIGS[cfg])


# --------------------------------------------------------------------------------------------------
# Equalised-learning-rate building blocks


class FullyConnected(nn.Module):
    """Linear layer with equalised learning rate and optional leaky ReLU (gain sqrt 2)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        activation: str = "linear",
        lr_multiplier: float = 1.0,
        bias_init: float = 0.0,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias.to(x.dtype) * self.bias_gain
        x = F.linear(x, w, b)  # (B, out)
        if self.activation == "lrelu":
            x = F.leaky_relu(x, 0.2) * SQRT2
        return x


class Conv2dLayer(nn.Module):
    """Discriminator convolution with equalised learning rate, optional 2x downsampling.

    With ``down``, a 3x3 conv blurs first (pad 2) and strides by 2 (anti-aliased, as in the papers);
    a 1x1 conv filters and downsamples first (see :func:`conv2d_resample`)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: str = "lrelu",
        down: bool = False,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.activation = activation
        self.down = down
        self.kernel_size = kernel_size
        self.conv_clamp = conv_clamp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        x = conv2d_resample(x, w, down=self.down)  # (B, out, H or H/2, W or W/2)
        b = self.bias.to(x.dtype) if self.bias is not None else None
        act = self.activation == "lrelu"
        return _epilogue(x, b, None, act, self.conv_clamp)


def _epilogue(
    x: torch.Tensor,
    bias: torch.Tensor | None,
    noise: torch.Tensor | None,
    lrelu: bool,
    clamp: float | None,
) -> torch.Tensor:
    """x + noise + bias, leaky ReLU (gain sqrt 2), clamp. In place when nothing needs gradients
    (generation, labelling), so a layer's epilogue allocates nothing; ``x`` must then be a fresh
    tensor the caller owns (a convolution's output)."""
    if not torch.is_grad_enabled():
        if noise is not None:
            x.add_(noise)
        if bias is not None:
            x.add_(bias[None, :, None, None])
        if lrelu:
            F.leaky_relu_(x, 0.2).mul_(SQRT2)
        if clamp is not None:
            x.clamp_(-clamp, clamp)
        return x
    if noise is not None:
        x = x + noise
    if bias is not None:
        x = x + bias[None, :, None, None]
    if lrelu:
        x = F.leaky_relu(x, 0.2) * SQRT2
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    demodulate: bool = True,
    up: bool = False,
    fused: bool = True,
    down: bool = False,
    reference: bool = False,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """StyleGAN2 modulated convolution (eq. 1-3 of the paper), with optional 2x up/downsampling.

    x: (B, Cin, H, W); weight: (Cout, Cin, k, k) already scaled; styles: (B, Cin).
    ``fused`` runs one grouped convolution with a per-sample kernel (groups = B); otherwise the
    modulation scales the input, a shared convolution runs, and demodulation scales the output,
    which is mathematically the same and faster for large batches on some back ends.
    Resampling goes through :func:`conv2d_resample` (transposed convolution + filter for ``up``);
    ``reference`` uses the literal zero-insert path instead (for tests). ``noise`` (broadcastable to
    the output) is added after demodulation, in the same pass where possible.
    Returns (B, Cout, H', W') with H' = 2H for ``up``, H/2 for ``down``.
    """
    conv = conv2d_resample_reference if reference else conv2d_resample
    b, cin, h, w_ = x.shape
    cout, _, k, _ = weight.shape
    dcoefs = None
    if demodulate:
        # sum_ik (s_i w_oik)^2 = sum_i s_i^2 sum_k w_oik^2: a (B, Cin) x (Cin, Cout) product, without
        # the (B, Cout, Cin, k, k) modulated weights (and their costly backward) that eq. 3 suggests
        wsq = weight.square().sum(dim=[2, 3])  # (Cout, Cin)
        dcoefs = (styles.square() @ wsq.t() + 1e-8).rsqrt()  # (B, Cout)
    if fused:
        wmod = weight[None] * styles[:, None, :, None, None]  # (B, Cout, Cin, k, k)
        if dcoefs is not None:
            wmod = wmod * dcoefs[:, :, None, None, None]
        xg = x.reshape(1, b * cin, h, w_)  # (1, B*Cin, H, W)
        y = conv(xg, wmod.reshape(b * cout, cin, k, k), up, down, groups=b)
        y = y.reshape(b, cout, y.shape[2], y.shape[3])  # (B, Cout, H', W')
        if noise is None:
            return y
        return y.add_(noise) if not torch.is_grad_enabled() else y + noise
    y = conv(x * styles[:, :, None, None], weight, up, down)  # (B, Cout, H', W')
    grad = torch.is_grad_enabled()
    if dcoefs is not None:
        d = dcoefs[:, :, None, None]
        if noise is not None and grad:
            return torch.addcmul(noise, y, d)  # y * d + noise in one pass
        y = y * d if grad else y.mul_(d)
    if noise is not None:
        y = y + noise if grad else y.add_(noise)
    return y


class MappingNetwork(nn.Module):
    """z -> w: 2nd-moment normalisation and an MLP with lr multiplier 0.01; tracks the mean w."""

    w_avg: torch.Tensor

    def __init__(
        self,
        z_dim: int,
        w_dim: int,
        num_ws: int,
        num_layers: int = 8,
        lr_multiplier: float = 0.01,
        w_avg_beta: float = 0.995,
    ) -> None:
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws = z_dim, w_dim, num_ws
        self.w_avg_beta = w_avg_beta
        dims = [z_dim] + [w_dim] * num_layers
        self.layers = nn.ModuleList(
            FullyConnected(dims[i], dims[i + 1], "lrelu", lr_multiplier) for i in range(num_layers)
        )
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(
        self,
        z: torch.Tensor,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        update_w_avg: bool = False,
    ) -> torch.Tensor:
        x = z * (z.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()  # (B, z_dim)
        for layer in self.layers:
            x = layer(x)  # (B, w_dim)
        if update_w_avg:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().float().mean(0).lerp(self.w_avg, self.w_avg_beta))
        ws = x[:, None, :].repeat(1, self.num_ws, 1)  # (B, num_ws, w_dim)
        if truncation_psi != 1.0:
            cut = self.num_ws if truncation_cutoff is None else truncation_cutoff
            avg = self.w_avg.to(ws.dtype)
            ws[:, :cut] = avg.lerp(ws[:, :cut], truncation_psi)
        return ws


NOISE_MODES = ("const", "random", "none")


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv + noise + bias + leaky ReLU (one "style block" of StyleGAN2 figure 2c)."""

    noise_const: torch.Tensor

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        up: bool = False,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.weight_gain = 1.0 / math.sqrt(in_channels * 9)
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.up = up
        self.resolution = resolution
        self.conv_clamp = conv_clamp
        self.fused = False

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        styles = self.affine(w)  # (B, Cin)
        weight = self.weight.to(x.dtype) * self.weight_gain
        fused = self.fused or x.shape[0] == 1  # one sample: modulate the weights, not the input
        noise = None
        if noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, self.resolution, self.resolution, device=x.device)
            noise = (noise * self.noise_strength).to(x.dtype)
        elif noise_mode == "const":
            noise = (self.noise_const * self.noise_strength).to(x.dtype)
        x = modulated_conv2d(x, weight, styles.to(x.dtype), True, self.up, fused, noise=noise)
        return _epilogue(x, self.bias.to(x.dtype), None, True, self.conv_clamp)  # (B, Cout, R, R)


class ToRGB(nn.Module):
    """1x1 modulated conv without demodulation to RGB (StyleGAN2 "tRGB")."""

    def __init__(
        self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None = None
    ) -> None:
        super().__init__()
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.weight_gain = 1.0 / math.sqrt(in_channels)
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.conv_clamp = conv_clamp
        self.fused = False

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain  # (B, Cin)
        fused = self.fused or x.shape[0] == 1
        x = modulated_conv2d(x, self.weight.to(x.dtype), styles.to(x.dtype), False, False, fused)
        return _epilogue(x, self.bias.to(x.dtype), None, False, self.conv_clamp)  # (B, 3, H, W)


class SynthesisBlock(nn.Module):
    """One resolution of the skip generator: [const |] conv0(up), conv1, toRGB."""

    num_conv: int

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int,
        conv_clamp: float | None,
    ) -> None:
        super().__init__()
        self.resolution = resolution
        self.first = in_channels == 0
        if self.first:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
            self.conv0: SynthesisLayer | None = None
        else:
            self.conv0 = SynthesisLayer(
                in_channels, out_channels, w_dim, resolution, up=True, conv_clamp=conv_clamp
            )
        self.conv1 = SynthesisLayer(
            out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp
        )
        self.torgb = ToRGB(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.num_conv = 1 if self.first else 2

    def forward(
        self,
        x: torch.Tensor | None,
        img: torch.Tensor | None,
        ws: torch.Tensor,
        noise_mode: str,
        feats: list[torch.Tensor] | None,
        dtype: torch.dtype,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # ws: (B, num_conv + 1, w_dim): one w per conv and one for toRGB.
        i = 0
        if self.conv0 is None:
            x = self.const.to(dtype)[None].repeat(ws.shape[0], 1, 1, 1)  # (B, C, 4, 4)
        else:
            assert x is not None
            x = self.conv0(x, ws[:, i], noise_mode)
            i += 1
            if feats is not None:
                feats.append(x)
        x = self.conv1(x, ws[:, i], noise_mode)
        i += 1
        if feats is not None:
            feats.append(x)
        y = self.torgb(x, ws[:, i]).float()
        if img is None:
            img = y
        elif torch.is_grad_enabled():
            img = upsample2d(img) + y  # (B, 3, res, res)
        else:
            img = y.add_(upsample2d(img))
        return x, img


class SynthesisNetwork(nn.Module):
    """Skip generator from a learned 4x4 constant to ``img_resolution``."""

    def __init__(
        self,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        channel_base: int,
        channel_max: int,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        log2 = int(np.log2(img_resolution))
        self.resolutions = [2**i for i in range(2, log2 + 1)]
        ch = {r: min(channel_base // r, channel_max) for r in self.resolutions}
        self.channels = ch
        self.blocks = nn.ModuleList()
        self.num_ws = 0
        for r in self.resolutions:
            cin = ch[r // 2] if r > 4 else 0
            block = SynthesisBlock(cin, ch[r], w_dim, r, img_channels, conv_clamp)
            self.blocks.append(block)
            self.num_ws += block.num_conv
        self.num_ws += 1  # the last toRGB; earlier toRGBs share their w with the next block's conv0

    def forward(
        self, ws: torch.Tensor, noise_mode: str = "const", return_features: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        if noise_mode not in NOISE_MODES:
            raise GlomsslError(f"noise_mode {noise_mode!r} is not one of {', '.join(NOISE_MODES)}")
        feats: list[torch.Tensor] | None = [] if return_features else None
        dtype = torch.float32
        x: torch.Tensor | None = None
        img: torch.Tensor | None = None
        idx = 0
        for block in self.blocks:
            assert isinstance(block, SynthesisBlock)
            n = block.num_conv
            x, img = block(x, img, ws[:, idx : idx + n + 1], noise_mode, feats, dtype)
            idx += n
        assert img is not None
        if feats is not None:
            return img, feats
        return img


class Generator(nn.Module):
    """StyleGAN2 generator: mapping network + skip synthesis network. Images in [-1, 1] (unclamped
    during training; callers clamp for display)."""

    def __init__(
        self,
        z_dim: int = 512,
        w_dim: int = 512,
        img_resolution: int = 256,
        img_channels: int = 3,
        mapping_layers: int = 8,
        channel_base: int = 16384,
        channel_max: int = 512,
        conv_clamp: float | None = None,
        **_ignored: Any,
    ) -> None:
        super().__init__()
        if img_resolution not in RESOLUTIONS and img_resolution not in (8, 16):
            raise GlomsslError(
                f"img_resolution {img_resolution} must be a power of two in 32..1024"
            )
        self.z_dim, self.w_dim = z_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.init_kwargs: dict[str, Any] = dict(
            z_dim=z_dim,
            w_dim=w_dim,
            img_resolution=img_resolution,
            img_channels=img_channels,
            mapping_layers=mapping_layers,
            channel_base=channel_base,
            channel_max=channel_max,
            conv_clamp=conv_clamp,
        )
        self.synthesis_net = SynthesisNetwork(
            w_dim, img_resolution, img_channels, channel_base, channel_max, conv_clamp
        )
        self.num_ws = self.synthesis_net.num_ws
        self.mapping_net = MappingNetwork(z_dim, w_dim, self.num_ws, mapping_layers)

    def mapping(
        self,
        z: torch.Tensor,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        update_w_avg: bool = False,
    ) -> torch.Tensor:
        """(B, z_dim) -> (B, num_ws, w_dim)."""
        return self.mapping_net(z, truncation_psi, truncation_cutoff, update_w_avg)  # type: ignore[no-any-return]

    def synthesis(
        self, ws: torch.Tensor, noise_mode: str = "const", return_features: bool = False
    ) -> Any:
        """(B, num_ws, w_dim) -> image (B, C, H, W), plus every synthesis conv layer's activations
        (in order, low to high resolution) when ``return_features``."""
        return self.synthesis_net(ws, noise_mode, return_features)

    def forward(
        self, z: torch.Tensor, truncation_psi: float = 1.0, noise_mode: str = "const"
    ) -> torch.Tensor:
        ws = self.mapping(z, truncation_psi)
        img = self.synthesis(ws, noise_mode)
        assert isinstance(img, torch.Tensor)
        return img

    def set_fused(self, fused: bool) -> None:
        """Choose the grouped-conv (fused) or the scale-conv-scale path for all modulated convs."""
        for m in self.modules():
            if isinstance(m, SynthesisLayer | ToRGB):
                m.fused = fused


class MinibatchStd(nn.Module):
    """Append the mean standard deviation over groups of samples as extra channels (ProGAN)."""

    def __init__(self, group_size: int = 4, num_channels: int = 1) -> None:
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = max(d for d in range(1, min(self.group_size, n) + 1) if n % d == 0)
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)  # (G, N/G, F, C/F, H, W)
        y = y - y.mean(dim=0)
        y = (y.square().mean(dim=0) + 1e-8).sqrt()  # (N/G, F, C/F, H, W)
        y = y.mean(dim=[2, 3, 4])  # (N/G, F)
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)  # (N, F, H, W)
        return torch.cat([x, y], dim=1)  # (N, C+F, H, W)


class DiscriminatorBlock(nn.Module):
    """Residual block: two 3x3 convs (second downsamples) + a 1x1 downsampling skip, / sqrt 2."""

    def __init__(self, in_channels: int, out_channels: int, conv_clamp: float | None) -> None:
        super().__init__()
        self.conv0 = Conv2dLayer(in_channels, in_channels, 3, conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(in_channels, out_channels, 3, down=True, conv_clamp=conv_clamp)
        self.skip = Conv2dLayer(
            in_channels, out_channels, 1, bias=False, activation="linear", down=True
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.skip(x)  # (B, Cout, H/2, W/2)
        x = self.conv1(self.conv0(x))
        return (x + y) * math.sqrt(0.5)


class Discriminator(nn.Module):
    """StyleGAN2 residual discriminator: fromRGB, residual blocks down to 4x4, minibatch std, conv,
    two fully connected layers; returns one logit per image, shape (B, 1)."""

    def __init__(
        self,
        img_resolution: int = 256,
        img_channels: int = 3,
        channel_base: int = 16384,
        channel_max: int = 512,
        mbstd_group: int = 4,
        conv_clamp: float | None = None,
        **_ignored: Any,
    ) -> None:
        super().__init__()
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.init_kwargs: dict[str, Any] = dict(
            img_resolution=img_resolution,
            img_channels=img_channels,
            channel_base=channel_base,
            channel_max=channel_max,
            mbstd_group=mbstd_group,
            conv_clamp=conv_clamp,
        )
        log2 = int(np.log2(img_resolution))
        res = [2**i for i in range(log2, 2, -1)]  # img_resolution .. 8
        ch = {r: min(channel_base // r, channel_max) for r in [*res, 4]}
        self.fromrgb = Conv2dLayer(img_channels, ch[img_resolution], 1, conv_clamp=conv_clamp)
        self.blocks = nn.ModuleList(DiscriminatorBlock(ch[r], ch[r // 2], conv_clamp) for r in res)
        c4 = ch[4]
        self.mbstd = MinibatchStd(mbstd_group, 1)
        self.conv = Conv2dLayer(c4 + 1, c4, 3, conv_clamp=conv_clamp)
        self.fc = FullyConnected(c4 * 16, c4, "lrelu")
        self.out = FullyConnected(c4, 1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = self.fromrgb(img)  # (B, C, R, R)
        for block in self.blocks:
            x = block(x)
        x = self.conv(self.mbstd(x))  # (B, C4, 4, 4)
        x = self.fc(x.flatten(1))  # (B, C4)
        return self.out(x)  # type: ignore[no-any-return]  # (B, 1)


def create_generator(cfg: str, resolution: int, **kw: Any) -> Generator:
    """Build a generator from a named config ("small", "paper256", "paper512", "paper1024", "auto");
    keyword arguments override the config's values (e.g. ``channel_max=32``, ``conv_clamp=256``)."""
    args = resolve_config(cfg, resolution)
    args.update(kw)
    return Generator(img_resolution=resolution, **args)


def create_discriminator(cfg: str, resolution: int, **kw: Any) -> Discriminator:
    """Build the matching discriminator for a named config (same channel widths as the generator)."""
    args = resolve_config(cfg, resolution)
    args.update(kw)
    return Discriminator(img_resolution=resolution, **args)
