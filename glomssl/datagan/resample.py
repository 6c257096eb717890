"""2x resampling for the StyleGAN2 networks: the [1, 3, 3, 1] low-pass filter and convolutions fused
with up- or downsampling.

StyleGAN2 (Karras et al., CVPR 2020, appendix B) upsamples a feature map before a 3x3 convolution and
low-pass filters it with the separable [1, 3, 3, 1] kernel. Written literally (insert zeros, filter,
convolve at the output resolution: :func:`conv2d_resample_reference`) the convolution runs over a 4x
larger, three-quarters-zero input, four times the multiply-adds it needs, and holds a 4x zero-filled
copy of the input per layer. The paper's implementation instead runs a stride-2 *transposed*
convolution over the input (every input pixel scatters its 3x3 footprint once) and filters the result
(:func:`conv2d_resample`). Both are linear and shift-invariant, so the products commute and the two
paths agree, with one exception handled here: the literal path filters, *truncates* the filtered map to
the output size and zero-pads it for the 3x3 convolution, so its one-pixel output border misses the
filter's overhang. :func:`_upconv_border` computes exactly that overhang from thin strips of the input
(O(H + W) work) and subtracts it, so the fused path reproduces the literal one to float rounding and
networks trained before the fusion keep producing the same images.

Downsampling (the discriminator) filters first and then runs a stride-2 convolution, which computes only
the pixels kept; the literal path convolves at full resolution and drops three pixels of four.

The filter runs as weighted sums of shifted slices rather than a depthwise convolution: the same result,
and far cheaper to differentiate twice (R1 and path-length regularisation) on CPU.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

_TAPS = (1.0, 3.0, 3.0, 1.0)  # separable low-pass filter; normalised to sum 1 per dimension


def _taps(gain: float) -> list[float]:
    """The four taps of one dimension for a 2-D filter of total ``gain`` (sqrt(gain) per dimension)."""
    g = gain**0.5
    return [t / sum(_TAPS) * g for t in _TAPS]


def _slice(x: torch.Tensor, dim: int, start: int, count: int, step: int) -> torch.Tensor:
    """``x`` along ``dim`` at ``start, start + step, ...`` (``count`` items), as a view."""
    index: list[slice] = [slice(None)] * x.dim()
    index[dim] = slice(start, start + step * (count - 1) + 1, step)
    return x[tuple(index)]


def _tap_range(k: int, n_out: int, n_in: int, p0: int, stride: int) -> tuple[int, int, int]:
    """Outputs n that tap ``k`` reaches inside the input (input index n * stride + k - p0 in
    [0, n_in)): (first n, count, first input index)."""
    lo = max(0, -((k - p0) // stride))  # ceil((p0 - k) / stride)
    hi = min(n_out - 1, (n_in - 1 + p0 - k) // stride)
    count = max(0, hi - lo + 1)
    return lo, count, lo * stride + k - p0


def _fir_raw(
    x: torch.Tensor, dim: int, pads: tuple[int, int], stride: int, gain: float
) -> torch.Tensor:
    """y[n] = sum_k t_k x[n * stride + k - p0] (zeros outside x), accumulated in place."""
    n_in = x.shape[dim]
    n_out = (n_in + pads[0] + pads[1] - 4) // stride + 1
    taps = _taps(gain)
    ranges = [_tap_range(k, n_out, n_in, pads[0], stride) for k in range(4)]
    full = next((k for k in range(4) if ranges[k][1] == n_out), None)
    if full is None:
        shape = list(x.shape)
        shape[dim] = n_out
        y = x.new_zeros(shape)
    else:  # a tap that reaches every output initialises it (no separate zero fill)
        y = _slice(x, dim, ranges[full][2], n_out, stride) * taps[full]
    for k, (lo, count, src) in enumerate(ranges):
        if count and k != full:
            y.narrow(dim, lo, count).add_(_slice(x, dim, src, count, stride), alpha=taps[k])
    return y


def _fir_adjoint_raw(
    g: torch.Tensor, dim: int, pads: tuple[int, int], stride: int, gain: float, n_in: int
) -> torch.Tensor:
    """The transpose of :func:`_fir_raw`: x[n * stride + k - p0] += t_k g[n]."""
    shape = list(g.shape)
    shape[dim] = n_in
    x = g.new_zeros(shape)
    n_out = g.shape[dim]
    for k, t in enumerate(_taps(gain)):
        lo, count, dst = _tap_range(k, n_out, n_in, pads[0], stride)
        if count:
            _slice(x, dim, dst, count, stride).add_(g.narrow(dim, lo, count), alpha=t)
    return x


class _Fir(torch.autograd.Function):
    """The 1-D filter as one autograd node whose backward is its exact transpose (and vice versa),
    so first and second derivatives cost one filter pass each and allocate one tensor."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, dim: int, pads: tuple[int, int], stride: int, gain: float
    ) -> torch.Tensor:
        ctx.cfg = (dim, pads, stride, gain, x.shape[dim])
        return _fir_raw(x, dim, pads, stride, gain)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> Any:  # type: ignore[override]
        dim, pads, stride, gain, n_in = ctx.cfg
        return _FirAdjoint.apply(g, dim, pads, stride, gain, n_in), None, None, None, None


class _FirAdjoint(torch.autograd.Function):
    """Transpose of :class:`_Fir` (zero insertion + filter when ``stride`` is 2)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        g: torch.Tensor,
        dim: int,
        pads: tuple[int, int],
        stride: int,
        gain: float,
        n_in: int,
    ) -> torch.Tensor:
        ctx.cfg = (dim, pads, stride, gain)
        return _fir_adjoint_raw(g, dim, pads, stride, gain, n_in)

    @staticmethod
    def backward(ctx: Any, gg: torch.Tensor) -> Any:  # type: ignore[override]
        dim, pads, stride, gain = ctx.cfg
        return _Fir.apply(gg, dim, pads, stride, gain), None, None, None, None, None


def fir_dim(
    x: torch.Tensor, dim: int, pads: tuple[int, int], stride: int = 1, gain: float = 1.0
) -> torch.Tensor:
    """The [1, 3, 3, 1] filter along one dimension with zero padding ``pads`` = (before, after),
    keeping every ``stride``-th output; ``gain`` is the 2-D gain (this dimension gets its square root).

    Output length (n + before + after - 4) // stride + 1. Differentiable any number of times."""
    return _Fir.apply(x, dim, pads, stride, gain)  # type: ignore[no-any-return]


def fir_dim_adjoint(
    g: torch.Tensor, dim: int, n: int, pads: tuple[int, int], stride: int = 1, gain: float = 1.0
) -> torch.Tensor:
    """The transpose of :func:`fir_dim` for an input of length ``n`` along ``dim``."""
    return _FirAdjoint.apply(g, dim, pads, stride, gain, n)  # type: ignore[no-any-return]


def fir2d(
    x: torch.Tensor, pads: tuple[int, int], stride: int = 1, gain: float = 1.0
) -> torch.Tensor:
    """Separable [1, 3, 3, 1] filter over H and W of (B, C, H, W) with the same pads on both."""
    x = fir_dim(x, 2, pads, stride, gain)
    return fir_dim(x, 3, pads, stride, gain)


def blur2d(x: torch.Tensor, pad: int) -> torch.Tensor:
    """[1,3,3,1] blur of every channel with symmetric zero padding ``pad`` (output H + 2*pad - 3)."""
    return fir2d(x, (pad, pad))


def downsample2d(x: torch.Tensor) -> torch.Tensor:
    """2x downsampling: low-pass filter then keep every second pixel. (B, C, H, W) -> (B, C, H/2, W/2)."""
    return fir2d(x, (1, 1), stride=2)


def _zero_insert(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Insert a zero after every element along ``dim`` (length n -> 2n, x at the even indices)."""
    y = torch.stack([x, torch.zeros_like(x)], dim=dim + 1)
    shape = list(x.shape)
    shape[dim] *= 2
    return y.reshape(shape)


def upsample2d_reference(x: torch.Tensor) -> torch.Tensor:
    """2x upsampling as the paper writes it: zero insertion + low-pass filter with gain 4."""
    y = _zero_insert(_zero_insert(x, 2), 3)  # (B, C, 2H, 2W), x at even rows/cols
    return fir2d(y, (2, 1), gain=4.0)  # (B, C, 2H, 2W)


def upsample2d(x: torch.Tensor) -> torch.Tensor:
    """2x upsampling equal to :func:`upsample2d_reference`, without the zero-filled intermediate.

    Zero insertion + filter is the transpose of filter + decimation (:func:`downsample2d`, pads 1/1),
    with twice the gain per dimension. (B, C, H, W) -> (B, C, 2H, 2W)."""
    h, w = x.shape[2], x.shape[3]
    x = fir_dim_adjoint(x, 2, 2 * h, (1, 1), stride=2, gain=4.0)
    return fir_dim_adjoint(x, 3, 2 * w, (1, 1), stride=2, gain=4.0)


# --------------------------------------------------------------------------------------------------
# Convolutions with resampling


def _check_kernel(w: torch.Tensor) -> int:
    k = int(w.shape[-1])
    if k not in (1, 3) or int(w.shape[-2]) != k:
        raise ValueError(f"resampling convolutions take 1x1 or 3x3 kernels, got {tuple(w.shape)}")
    return k


def conv2d_resample_reference(
    x: torch.Tensor, w: torch.Tensor, up: bool = False, down: bool = False, groups: int = 1
) -> torch.Tensor:
    """The literal path: zero-insert + filter + convolve at the output resolution (``up``), or
    filter + convolve at the input resolution + drop every second pixel (``down``).

    x: (B, Cin, H, W); w: (Cout, Cin / groups, k, k), k in {1, 3}. Kept as the reference that tests
    compare :func:`conv2d_resample` against."""
    k = _check_kernel(w)
    if up:
        return F.conv2d(upsample2d_reference(x), w, padding=k // 2, groups=groups)
    if down:
        if k == 1:
            return F.conv2d(fir2d(x, (1, 1)), w, groups=groups)[:, :, ::2, ::2]
        return F.conv2d(blur2d(x, 2), w, groups=groups)[:, :, ::2, ::2]
    return F.conv2d(x, w, padding=k // 2, groups=groups)


def conv2d_resample(
    x: torch.Tensor, w: torch.Tensor, up: bool = False, down: bool = False, groups: int = 1
) -> torch.Tensor:
    """Convolution with 2x up- or downsampling at the cost of the official design.

    x: (B, Cin, H, W); w: (Cout, Cin / groups, k, k), k in {1, 3}. Returns (B, Cout, 2H, 2W) with
    ``up``, (B, Cout, H/2, W/2) with ``down``, else (B, Cout, H, W). Equal to
    :func:`conv2d_resample_reference` to float rounding."""
    if up and down:
        raise ValueError("conv2d_resample: choose up or down, not both")
    k = _check_kernel(w)
    if up:
        if k == 1:  # a 1x1 convolution commutes with the (per-channel) upsampling
            return upsample2d(F.conv2d(x, w, groups=groups))
        return _upconv3x3(x, w, groups)
    if down:
        if k == 1:
            return F.conv2d(downsample2d(x), w, groups=groups)
        return F.conv2d(blur2d(x, 2), w, stride=2, groups=groups)  # (B, Cout, H/2, W/2)
    return F.conv2d(x, w, padding=k // 2, groups=groups)


def _transpose_weight(w: torch.Tensor, groups: int) -> torch.Tensor:
    """(Cout, Cin/g, k, k) correlation weights -> (Cin, Cout/g, k, k) conv_transpose2d weights.

    ``conv_transpose2d`` scatters with the kernel as given, i.e. it convolves; our layers correlate,
    so the kernel is also flipped."""
    cout, cin_g, k, _ = w.shape
    wt = w.reshape(groups, cout // groups, cin_g, k, k).transpose(1, 2)
    return wt.reshape(groups * cin_g, cout // groups, k, k).flip([2, 3])


def _upconv3x3(x: torch.Tensor, w: torch.Tensor, groups: int) -> torch.Tensor:
    """Stride-2 transposed 3x3 convolution + [1,3,3,1] filter (gain 4) + exact border term."""
    z = F.conv_transpose2d(x, _transpose_weight(w, groups), stride=2, groups=groups)
    # z: (B, Cout, 2H+1, 2W+1); index n holds output position n - 1 of conv(zero-inserted x)
    y = fir2d(z, (1, 1), gain=4.0)  # (B, Cout, 2H, 2W)
    del z
    return _upconv_border(y, x, w, groups)


def _upconv_border(y: torch.Tensor, x: torch.Tensor, w: torch.Tensor, groups: int) -> torch.Tensor:
    """Remove from ``y`` what the reference path's truncation leaves out.

    Let v be the filtered, zero-inserted input on its full support, rows/cols -1 .. 2H (one beyond the
    output on each side). The reference convolves v cut to [0, 2H) x [0, 2W) with zero padding; the
    fused path effectively convolves all of v. The difference is the 3x3 correlation of v's outer
    frame, which only reaches the output's first/last row and column. With per-dimension taps
    t = [1, 3, 3, 1] / 4 and u the zero-inserted input:
      v[-1, c] = t3 * rowfilter(u[0])(c),  v[2H, c] = t0 * rowfilter(u[2H-2])(c),  c = -1 .. 2W
      v[r, -1] = t3 * colfilter(u[:, 0])(r), v[r, 2W] = t0 * colfilter(u[:, 2W-2])(r), r = 0 .. 2H-1
    where u[0] / u[2H-2] are the first / last input rows, zero-inserted (likewise for columns)."""
    t = _taps(4.0)
    # frame rows (B, Cin, 1, 2W+2): filtered along W over positions -1 .. 2W
    top = fir_dim(_zero_insert(x[:, :, :1], 3), 3, (3, 2), gain=4.0) * t[3]
    bottom = fir_dim(_zero_insert(x[:, :, -1:], 3), 3, (3, 2), gain=4.0) * t[0]
    # frame columns (B, Cin, 2H, 1): filtered along H over positions 0 .. 2H-1
    left = fir_dim(_zero_insert(x[:, :, :, :1], 2), 2, (2, 1), gain=4.0) * t[3]
    right = fir_dim(_zero_insert(x[:, :, :, -1:], 2), 2, (2, 1), gain=4.0) * t[0]
    d_top = F.conv2d(top, w[:, :, :1, :], groups=groups)  # (B, Cout, 1, 2W)
    d_bottom = F.conv2d(bottom, w[:, :, 2:, :], groups=groups)
    d_left = F.conv2d(left, w[:, :, :, :1], padding=(1, 0), groups=groups)  # (B, Cout, 2H, 1)
    d_right = F.conv2d(right, w[:, :, :, 2:], padding=(1, 0), groups=groups)
    return _SubtractBorder.apply(y, d_top, d_bottom, d_left, d_right)  # type: ignore[no-any-return]


class _SubtractBorder(torch.autograd.Function):
    """y with its first/last row and column reduced by the given strips, in place; the gradient
    passes through unchanged (no copy of the whole map, unlike autograd's in-place slice updates)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        y: torch.Tensor,
        top: torch.Tensor,
        bottom: torch.Tensor,
        left: torch.Tensor,
        right: torch.Tensor,
    ) -> torch.Tensor:
        ctx.mark_dirty(y)
        y[:, :, :1, :] -= top
        y[:, :, -1:, :] -= bottom
        y[:, :, :, :1] -= left
        y[:, :, :, -1:] -= right
        return y

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> Any:  # type: ignore[override]
        return g, -g[:, :, :1, :], -g[:, :, -1:, :], -g[:, :, :, :1], -g[:, :, :, -1:]
