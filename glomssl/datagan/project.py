"""Project real annotated images into the generator's W+ space, so real masks can train the labeler.

For each real image we optimise a per-layer latent ``ws`` (W+, Abdal et al. "Image2StyleGAN", 2019) and,
optionally, the generator's per-layer noise maps so that ``G.synthesis(ws)`` reproduces the image
(StyleGAN2 paper, Karras et al. 2020, appendix D, without its downloaded VGG). The loss is

    L = MSE(x, G(w)) + lambda_ssim * (1 - MS-SSIM(x, G(w)))                  (Wang et al., 2003)
        [+ lambda_enc * (1 - cos(E(x), E(G(w))))]  with E a glomssl pretrain encoder (multi-stage pooled)
        [+ lambda_noise * sum over noise pyramids of squared 1-pixel autocorrelations]   (StyleGAN2 D)

The annotation folder then holds ``X.png`` (the real image at the generator's resolution), ``X.npz``
(its ws and fitted noise maps), ``X_mask.png`` (the real mask, resized by nearest neighbour) and the
reconstruction under ``reconstructions/X.png`` for checking. ``X.npz`` is written last, so a rerun
skips images already projected.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from glomssl.config import opt
from glomssl.errors import GlomsslError

if TYPE_CHECKING:
    import torch
    from torch import nn

_MS_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003, five scales


def _gauss_window(size: int, sigma: float, device: Any) -> torch.Tensor:
    import torch

    x = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None].repeat(3, 1, 1, 1)  # (3, 1, k, k)


def ms_ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Multi-scale SSIM of two (B, 3, H, W) images in [-1, 1] (data range 2); as many scales as fit.

    MS-SSIM = l_M^w_M * prod_j cs_j^w_j with an 11x11 Gaussian window (sigma 1.5), smaller for tiny
    images; the weights of the scales used are renormalised to sum to one.
    """
    import torch
    import torch.nn.functional as F

    c1, c2 = (0.01 * 2) ** 2, (0.03 * 2) ** 2
    k = min(11, x.shape[-1])
    scales = max(1, min(5, 1 + int(torch.log2(torch.tensor(x.shape[-1] / k)).floor())))
    w = torch.tensor(_MS_WEIGHTS[:scales], device=x.device)
    w = w / w.sum()
    vals = []
    for s in range(scales):
        k = min(11, x.shape[-1])
        win = _gauss_window(k, 1.5 * k / 11, x.device)
        mx, my = F.conv2d(x, win, groups=3), F.conv2d(y, win, groups=3)
        sxx = F.conv2d(x * x, win, groups=3) - mx * mx
        syy = F.conv2d(y * y, win, groups=3) - my * my
        sxy = F.conv2d(x * y, win, groups=3) - mx * my
        cs = ((2 * sxy + c2) / (sxx + syy + c2)).mean(dim=(1, 2, 3))  # (B,)
        if s == scales - 1:
            lum = ((2 * mx * my + c1) / (mx * mx + my * my + c1)).mean(dim=(1, 2, 3))
            vals.append((lum * cs).clamp(min=1e-6))
        else:
            vals.append(cs.clamp(min=1e-6))
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    return torch.stack([v ** w[i] for i, v in enumerate(vals)]).prod(0)  # (B,)


def noise_regulariser(noises: list[torch.Tensor]) -> torch.Tensor:
    """StyleGAN2 projector's noise penalty: squared autocorrelation at 1-pixel shifts, per octave."""
    import torch
    import torch.nn.functional as F

    reg = torch.zeros(())
    for n in noises:
        m = n[None, None]  # (1, 1, H, W)
        while True:
            reg = reg + (m * m.roll(1, dims=3)).mean() ** 2 + (m * m.roll(1, dims=2)).mean() ** 2
            if m.shape[-1] <= 8:
                break
            m = F.avg_pool2d(m, 2)
    return reg


@contextmanager
def _trainable_noise(G: nn.Module, enable: bool) -> Iterator[dict[str, torch.Tensor]]:
    """Swap each ``noise_const`` buffer for a trainable leaf tensor (restored on exit)."""
    import torch

    swapped: list[tuple[Any, str, torch.Tensor]] = []
    leaves: dict[str, torch.Tensor] = {}
    try:
        if enable:
            for mname, mod in G.named_modules():
                buf = mod._buffers.get("noise_const")
                if buf is None:
                    continue
                leaf = torch.randn_like(buf).requires_grad_(True)
                mod._buffers["noise_const"] = leaf
                swapped.append((mod, "noise_const", buf))
                leaves[f"{mname}.noise_const" if mname else "noise_const"] = leaf
        yield leaves
    finally:
        for mod, name, buf in swapped:
            mod._buffers[name] = buf


def project_image(
    G: nn.Module,
    target: torch.Tensor,
    steps: int = 300,
    lr: float = 0.05,
    optimize_noise: bool = True,
    encoder: nn.Module | None = None,
    ssim_weight: float = 1.0,
    encoder_weight: float = 1.0,
    noise_weight: float = 1e3,
    seed: int = 0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, float]]:
    """Fit W+ (and noise) to ``target`` (1, 3, H, W) in [-1, 1].

    Returns ws (num_ws, w_dim), the fitted noise maps by buffer name, and the loss terms (mse,
    1-ms_ssim, encoder, as optimised: the synthesised image unclamped, clamped for the encoder) of the
    returned ws and noise, i.e. after the last optimiser step.
    """
    import torch
    import torch.nn.functional as F

    device = target.device
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # start from the mean w (Karras et al. 2020, appendix D)
        z = torch.randn(512, int(G.z_dim), generator=gen).to(device)  # type: ignore[arg-type]
        w_avg = G.mapping(z).mean(0, keepdim=True)  # type: ignore[operator]  # (1, num_ws, w_dim)
    ws = w_avg.clone().requires_grad_(True)
    feat_t = None
    if encoder is not None:
        with torch.no_grad():
            feat_t = encoder((target + 1) / 2)  # (1, D)
    terms: dict[str, float] = {}
    with _trainable_noise(G, optimize_noise) as noises:
        opt = torch.optim.Adam([ws, *noises.values()], lr=lr, betas=(0.9, 0.999))
        for step in range(steps):
            t = step / max(1, steps - 1)  # cosine ramp-down, short ramp-up (appendix D schedule)
            ramp = min(1.0, t / 0.05) * (0.5 + 0.5 * math.cos(math.pi * t))
            for g in opt.param_groups:
                g["lr"] = lr * max(ramp, 0.01)
            img = G.synthesis(ws, noise_mode="const")  # type: ignore[operator]  # (1, 3, H, W)
            mse = F.mse_loss(img, target)
            ssim = 1 - ms_ssim(img, target).mean()
            loss = mse + ssim_weight * ssim
            enc = torch.zeros(())
            if encoder is not None and feat_t is not None:
                f = encoder((img.clamp(-1, 1) + 1) / 2)
                enc = 1 - F.cosine_similarity(f, feat_t).mean()
                loss = loss + encoder_weight * enc
            reg = noise_regulariser(list(noises.values())) if noises else torch.zeros(())
            loss = loss + noise_weight * reg
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():  # keep noise maps N(0, 1), as the generator expects
                for n in noises.values():
                    n.sub_(n.mean()).div_(n.std().clamp(min=1e-8))
        # Report the ws and noise that are returned, not the forward pass before the last optimiser
        # step (and noise renormalisation): one more forward from the final ws and noise.
        with torch.no_grad():
            img = G.synthesis(ws, noise_mode="const")  # type: ignore[operator]
            enc = torch.zeros(())
            if encoder is not None and feat_t is not None:
                enc = 1 - F.cosine_similarity(encoder((img.clamp(-1, 1) + 1) / 2), feat_t).mean()
            terms = {
                "mse": float(F.mse_loss(img, target)),
                "1-ms_ssim": float(1 - ms_ssim(img, target).mean()),
                "encoder": float(enc),
            }
        fitted = {k: v.detach().clone() for k, v in noises.items()}
    return ws.detach()[0], fitted, terms


@dataclass
class ProjectConfig:
    """``glomssl datagan project`` options."""

    network: str
    images: str
    out: str
    masks: str | None = None
    mask_threshold: int = opt(127, ge=0, le=254)  # black/white masks: foreground above this
    steps: int = opt(300, ge=1)
    lr: float = opt(0.05, gt=0)
    optimize_noise: bool = True
    encoder: str | None = None
    encoder_weight: float = opt(1.0, ge=0)
    ssim_weight: float = opt(1.0, ge=0)
    seed: int = opt(0, ge=0)
    device: str = "cpu"
    quiet: bool = False

    def validate(self) -> None:
        from glomssl.engine import resolve_device

        resolve_device(self.device)


def _find_mask(masks: Path, stem: str) -> Path | None:
    for cand in (f"{stem}_mask.png", f"{stem}.png", f"{stem}_mask.tif", f"{stem}.tif"):
        if (masks / cand).is_file():
            return masks / cand
    return None


MAX_CLASS_ID = 63  # grey values above this (except 255 = unlabelled) are not read as class ids
_EXTREME = 0.9  # a black/white export has at least this share of near-black or near-white pixels


def mask_class_ids(path: Path, threshold: int = 127) -> Any:
    """A mask file -> class ids (H, W) uint8, validated where it enters (issue 10, item 17).

    * class-id masks (grey or palette values 0..63, 255 = unlabelled) are kept as they are;
    * black/white exports of painting tools (grey or RGB 0-255, anti-aliased edges; also coloured
      strokes on black, read by their brightest channel) become 0/1 at ``threshold``;
    * anything else is a one-line error that says what the file holds.
    """
    import numpy as np

    from glomssl.data.images import _open_checked

    try:
        with _open_checked(path) as im:
            mode = im.mode
            arr = np.asarray(im)
    except Exception as exc:  # PIL raises many types for broken files; reported by the caller
        raise OSError(f"{type(exc).__name__}: {exc}") from exc
    colour = False
    if arr.ndim == 3:
        rgb = arr[..., :3]
        colour = not bool((rgb == rgb[..., :1]).all())
        arr = rgb.max(axis=-1) if colour else rgb[..., 0]
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.dtype != np.uint8:
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise GlomsslError(
                f"mask {path} is a {mode} image with values up to {arr.max()}; save it as an 8-bit "
                "PNG (class ids, or black/white)"
            )
        arr = arr.astype(np.uint8)
    values = set(np.unique(arr).tolist())
    black_white = 255 in values and values <= {0, 255}  # read as object/background, not unlabelled
    ids = values <= set(range(MAX_CLASS_ID + 1)) | {255}
    if ids and not colour and not black_white:
        return arr  # class ids as painted
    extreme = float(((arr <= 8) | (arr >= 247)).mean()) if arr.size else 1.0
    if extreme >= _EXTREME:
        return (arr > threshold).astype(np.uint8)  # black/white export -> background 0, object 1
    lo, hi = int(arr.min()), int(arr.max())
    raise GlomsslError(
        f"mask {path} holds grey levels {lo}..{hi} ({len(values)} distinct) that are neither class "
        f"ids (0..{MAX_CLASS_ID}, 255 = unlabelled) nor a black/white mask; save class ids as grey "
        "values, or export the mask in black and white"
    )


def run_datagan_project(cfg: ProjectConfig, G: nn.Module | None = None) -> dict[str, Any]:
    """Project every image of ``cfg.images`` into ``cfg.out`` (resumable); returns a summary."""
    import numpy as np
    import torch
    from PIL import Image

    from glomssl.data.images import centre_square, image_ok, load_rgb
    from glomssl.datagan.factory import _save_png, latent_meta, to_uint8
    from glomssl.datagan.features import load_network, save_latent
    from glomssl.datagan.progress import Progress
    from glomssl.fsutil import atomic_write_text, ensure_writable_dir
    from glomssl.manifest import list_images

    src = Path(cfg.images)
    if not src.is_dir():
        raise GlomsslError(f"--images {src} is not a folder of images; check the path")
    from glomssl.fsutil import refuse_out_is_input

    refuse_out_is_input(cfg.out, [src], "datagan project", "--images")  # would overwrite them
    files = list_images(src, exclude=[cfg.out], command="datagan project")  # not its own output
    if not files:
        raise GlomsslError(f"--images {src} holds no images")
    masks_dir = Path(cfg.masks) if cfg.masks else None
    if masks_dir is not None and not masks_dir.is_dir():
        raise GlomsslError(f"--masks {masks_dir} is not a folder; check the path")
    pairs = []
    unreadable: list[dict[str, str]] = []
    for f in files:  # every input is checked before the first (slow) projection
        mask = _find_mask(masks_dir, f.stem) if masks_dir else None
        if masks_dir is not None and mask is None:
            raise GlomsslError(
                f"image {f.name} has no mask in {masks_dir} (looked for {f.stem}_mask.png or "
                f"{f.stem}.png); add it or move the image out of --images"
            )
        reason = image_ok(f)
        if reason is None and mask is not None:
            try:
                ids = mask_class_ids(mask, cfg.mask_threshold)
            except OSError as exc:  # the mask is at fault, not the image: say so
                unreadable.append({"path": str(f), "mask": str(mask), "reason": str(exc)[:200]})
                continue
            with Image.open(f) as im:
                w, h = im.size
            if ids.shape != (h, w):
                raise GlomsslError(
                    f"mask {mask} is {ids.shape[1]}x{ids.shape[0]} px but its image {f} is "
                    f"{w}x{h} px; save the mask at the size of its image"
                )
        if reason is not None:
            unreadable.append({"path": str(f), "reason": reason})
            continue
        pairs.append((f, mask))
    bad_masks = [r for r in unreadable if "mask" in r]
    if not pairs:  # nothing to project: one line, and no --out folder left behind
        names = ", ".join(Path(r["path"]).name for r in unreadable[:5])
        more = f" and {len(unreadable) - 5} more" if len(unreadable) > 5 else ""
        if bad_masks:
            first = bad_masks[0]
            raise GlomsslError(
                f"mask {first['mask']} cannot be read as an image ({first['reason']}); save it as "
                f"an 8-bit PNG (class ids, or black/white); nothing to project (skipped "
                f"{names}{more})"
            )
        raise GlomsslError(
            f"--images {src} holds no readable image (skipped {names}{more}: "
            f"{unreadable[0]['reason']}); re-save them as PNG or JPEG"
        )
    from glomssl.datagan.factory import NETWORK_KEY, check_latent_folder, network_sha256
    from glomssl.engine import resolve_device

    device = resolve_device(cfg.device)
    G = load_network(G if G is not None else cfg.network, device)
    sha = network_sha256(G)
    encoder = None
    if cfg.encoder:
        from glomssl.models.encoder import load_backbone

        if not Path(cfg.encoder).exists():
            raise GlomsslError(
                f"--encoder {cfg.encoder} does not exist; pass a `glomssl pretrain` run folder or "
                "backbone .safetensors, or drop the option"
            )
        try:
            encoder, _info = load_backbone(cfg.encoder, device, layers=(2, 3, 4))
        except GlomsslError as exc:
            raise GlomsslError(f"--encoder {cfg.encoder}: {exc}") from exc
        encoder.requires_grad_(False)
    out_p = Path(cfg.out)
    if out_p.is_dir():  # resuming: the latents already there must be this generator's
        check_latent_folder(out_p, sha, cfg.network)
        for f, _mask in pairs:
            npz = out_p / f"{f.stem}.npz"
            meta = latent_meta(npz) if npz.is_file() else None
            if npz.is_file() and (meta is None or meta.get(NETWORK_KEY) != sha):
                raise GlomsslError(
                    f"--out {out_p} already holds {npz.name}, which records no generator (or is "
                    "unreadable), so it cannot be resumed with this --network; use a new --out"
                )
    out = ensure_writable_dir(cfg.out)
    (out / "reconstructions").mkdir(exist_ok=True)
    if unreadable:
        atomic_write_text(out / "skipped.jsonl", "".join(json.dumps(r) + "\n" for r in unreadable))
        print(
            f"datagan project: skipped {len(unreadable)} of {len(files)} images "
            f"({len(unreadable) - len(bad_masks)} unreadable, {len(bad_masks)} with an unreadable "
            f"mask; listed in {out / 'skipped.jsonl'})",
            file=sys.stderr,
        )
    res = int(G.img_resolution)  # type: ignore[arg-type]
    done = skipped = 0
    losses = []
    bar = Progress("datagan project", len(pairs), 0, cfg.quiet, every=10)
    for f, mask in pairs:
        bar.update(1)
        name = f.stem
        if (out / f"{name}.npz").is_file():
            skipped += 1
            continue
        real = centre_square(load_rgb(f), res)
        m = None
        if mask is not None:
            ids = mask_class_ids(mask, cfg.mask_threshold)
            m = centre_square(Image.fromarray(ids), res, Image.Resampling.NEAREST)
        arr = np.asarray(real, dtype=np.float32) / 127.5 - 1.0
        target = torch.from_numpy(arr).permute(2, 0, 1)[None].to(device)  # (1, 3, H, W)
        ws, noise, terms = project_image(
            G,
            target,
            cfg.steps,
            cfg.lr,
            cfg.optimize_noise,
            encoder,
            cfg.ssim_weight,
            cfg.encoder_weight,
            seed=cfg.seed,
        )
        _save_png(out / f"{name}.png", np.asarray(real))
        if m is not None:
            m.save(out / f".{name}_mask.tmp.png")
            (out / f".{name}_mask.tmp.png").replace(out / f"{name}_mask.png")
        from glomssl.datagan.features import synthesize_latent

        recon, _ = synthesize_latent(G, {"ws": ws, "noise": noise}, device)
        # report the error of what is saved: the reconstruction clamped to [-1, 1] as in
        # reconstructions/X.png (before its 8-bit rounding) against the saved X.png
        with torch.no_grad():
            shown = recon.clamp(-1, 1)
            terms["mse"] = float(torch.nn.functional.mse_loss(shown, target))
            terms["1-ms_ssim"] = float(1 - ms_ssim(shown, target).mean())
        _save_png(out / "reconstructions" / f"{name}.png", to_uint8(recon[0]))
        net_name = str(cfg.network) if cfg.network else f"<{type(G).__name__} object>"
        meta_kw = {"source": str(f.name), "network": net_name, NETWORK_KEY: sha, **terms}
        save_latent(out / f"{name}.npz", ws, noise, **meta_kw)
        losses.append({"image": f.name, **terms})
        done += 1
    bar.close()
    if losses:
        log = out / "projection.jsonl"
        old = log.read_text(encoding="utf-8") if log.is_file() else ""
        atomic_write_text(log, old + "".join(json.dumps(r) + "\n" for r in losses))
    # None (JSON null) when nothing was projected in this run: NaN is not valid JSON
    mean_mse = float(np.mean([r["mse"] for r in losses])) if losses else None
    if mean_mse is not None and not math.isfinite(mean_mse):
        mean_mse = None
    return {
        "out": str(out),
        "projected": done,
        "skipped": skipped,
        "unreadable": len(unreadable),
        "mean_mse": mean_mse,
    }
