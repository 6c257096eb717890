"""Detector training tiles made from glomerulus crops (mosaics on real tissue background).

Public glomerulus data mostly come as crops: one glomerulus per image, with its mask, resized so the
glomerulus fills the crop (../shared/data/glomeruli: 224 px, the mask's box is the whole crop). A slide
detector needs fields: several glomeruli among tubules, vessels and glass, at the resolution it runs
at. This module builds such fields from the crops alone:

1. *scale*: every glomerulus is resized so that its diameter is a physical size drawn log-uniformly
   from ``glom_um`` (human glomeruli are ~100-250 um across), expressed at the working resolution
   ``mpp``; with ``crop_mpp`` known, the crop's own size is kept instead (x a small jitter);
2. *background*: the crops' own surroundings -- the corners outside each mask -- are quilted into a
   tissue texture (patches rotated by multiples of 90 degrees, soft seams), and a random smooth blob
   turns part of some tiles into glass, with the glass colour of that slide;
3. *objects*: glomeruli are pasted at random positions (some cut by the tile edge), rotations and
   flips, with a random rim of their own surroundings feathered in, not overlapping each other;
4. *boxes* come from the transformed masks, so they are exact; a glomerulus less than
   ``MIN_VISIBLE`` visible is never placed (it would be an unlabelled object);
5. each tile gets one mild stain jitter (hue, saturation, brightness) and sometimes a slight blur.

Background and glomeruli of one tile come mostly from the same slide, so stain is coherent within a
tile and varies between tiles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from glomssl.detect.dataset import Pair
from glomssl.errors import GlomsslError

MIN_VISIBLE = 0.15  # least visible share of a glomerulus cut by the tile edge (a labelled sliver)
MIN_CORNER = 16  # least corner patch side (crop pixels) used for the background


@dataclass
class Crop:
    """A glomerulus crop: RGB, binary mask, the mask's diameter (px), corner patches, group."""

    rgb: np.ndarray  # (H, W, 3) uint8
    mask: np.ndarray  # (H, W) bool
    diameter: float  # longer side of the mask's box, crop pixels
    corners: list[np.ndarray]  # background patches outside the mask, (k, k, 3) uint8
    group: str


def _corner_patches(rgb: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
    """The largest square in each corner with (almost) no mask pixel: the crop's own surroundings."""
    h, w = mask.shape
    out = []
    for flip_y in (False, True):
        for flip_x in (False, True):
            m = mask[::-1] if flip_y else mask
            m = m[:, ::-1] if flip_x else m
            img = rgb[::-1] if flip_y else rgb
            img = img[:, ::-1] if flip_x else img
            cs = np.cumsum(np.cumsum(m.astype(np.int64), 0), 1)  # (H, W) counts of mask pixels
            best = 0
            for k in range(MIN_CORNER, min(h, w) + 1):
                if cs[k - 1, k - 1] > 0.01 * k * k:
                    break
                best = k
            if best >= MIN_CORNER:
                out.append(np.ascontiguousarray(img[:best, :best]))
    return out


def load_crops(pairs: list[Pair], threshold: int = 127) -> tuple[list[Crop], list[dict[str, str]]]:
    """Read crops and masks (binary, largest component kept); unreadable ones are skipped and listed."""
    import cv2

    from glomssl.data.images import load_rgb
    from glomssl.data.masks import _load_array as load_mask_array
    from glomssl.data.masks import binarize

    crops: list[Crop] = []
    skipped: list[dict[str, str]] = []
    for p in pairs:
        try:
            rgb = np.asarray(load_rgb(p.image), dtype=np.uint8)
            m = binarize(load_mask_array(p.mask), threshold).astype(np.uint8)
        except GlomsslError as exc:
            skipped.append({"path": str(p.image), "reason": str(exc)})
            continue
        if m.shape != rgb.shape[:2]:
            skipped.append({"path": str(p.image), "reason": "mask size differs from the image"})
            continue
        n, lab, stats, _ = cv2.connectedComponentsWithStats(m)
        if n < 2:
            skipped.append({"path": str(p.image), "reason": "empty mask"})
            continue
        k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        mask = lab == k
        diameter = float(max(stats[k, cv2.CC_STAT_WIDTH], stats[k, cv2.CC_STAT_HEIGHT]))
        crops.append(Crop(rgb, mask, diameter, _corner_patches(rgb, mask), p.group))
    return crops, skipped


def _smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """A smooth random field in [0, 1] (bicubic upsampling of a coarse noise grid)."""
    import cv2

    coarse = rng.random((cells, cells)).astype(np.float32)
    f = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    f = cv2.GaussianBlur(f, (0, 0), size / cells / 2)
    lo, hi = float(f.min()), float(f.max())
    return np.asarray((f - lo) / max(hi - lo, 1e-6))


def _disc_alpha(k: int) -> np.ndarray:
    """(k, k) alpha of a soft disc filling the square (a super-Gaussian: flat centre, soft rim)."""
    yy, xx = np.mgrid[:k, :k].astype(np.float32) + 0.5
    r = np.hypot(yy - k / 2, xx - k / 2) / (k / 2)
    return np.asarray(np.exp(-((r / 0.8) ** 6)), dtype=np.float32)


def quilt_background(
    rng: np.random.Generator, patches: list[np.ndarray], size: int, scale: float, pool: int = 48
) -> np.ndarray:
    """A (size, size, 3) float32 tissue texture quilted from corner ``patches`` resized by ``scale``.

    Up to ``pool`` patches are drawn, resized and turned by a random angle once; each cell of a dense
    grid then takes one of them as a soft disc (so neither square seams nor a grid shows), rotated by a
    multiple of 90 degrees and maybe mirrored.
    """
    import cv2

    chosen = rng.choice(len(patches), size=min(pool, len(patches)), replace=False)
    ready = []
    for j in chosen:
        k = max(6, int(round(patches[j].shape[0] * scale)))
        small = cv2.resize(patches[j], (k, k), interpolation=cv2.INTER_AREA).astype(np.float32)
        turn = cv2.getRotationMatrix2D((k / 2, k / 2), float(rng.uniform(0, 360)), 1.0)
        ready.append(cv2.warpAffine(small, turn, (k, k), borderMode=cv2.BORDER_REFLECT))
    # every patch in its 8 orientations, premultiplied by its soft-disc alpha
    variants: list[tuple[np.ndarray, np.ndarray]] = []
    for patch in ready:
        a = _disc_alpha(patch.shape[0])
        for rot in range(4):
            for mirror in (False, True):
                v = np.rot90(patch, rot)
                v = v[:, ::-1] if mirror else v
                variants.append((np.ascontiguousarray(v * a[..., None]), a))
    step = max(3, int(0.5 * float(np.median([p.shape[0] for p in ready]))))
    canvas = np.zeros((size, size, 3), np.float32)
    weight = np.zeros((size, size), np.float32)
    pos = [(y, x) for y in range(-step, size, step) for x in range(-step, size, step)]
    picks = rng.integers(len(variants), size=len(pos))
    jitter = rng.integers(-(step // 3), step // 3 + 1, size=(len(pos), 2))
    for n in rng.permutation(len(pos)):
        pa, a = variants[picks[n]]
        k = a.shape[0]
        y, x = pos[n][0] + int(jitter[n, 0]), pos[n][1] + int(jitter[n, 1])
        y0, x0, y1, x1 = max(0, y), max(0, x), min(size, y + k), min(size, x + k)
        if y1 <= y0 or x1 <= x0:
            continue
        canvas[y0:y1, x0:x1] += pa[y0 - y : y1 - y, x0 - x : x1 - x]
        weight[y0:y1, x0:x1] += a[y0 - y : y1 - y, x0 - x : x1 - x]
    empty = weight < 1e-3
    canvas /= np.maximum(weight, 1e-3)[..., None]
    if empty.any():
        canvas[empty] = canvas[~empty].mean(axis=0) if (~empty).any() else 200.0
    return canvas


def _transform_crop(
    rng: np.random.Generator, crop: Crop, diameter: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resize, rotate and flip a crop so its glomerulus is ``diameter`` px across.

    Returns (rgb float32, exact mask bool, paste alpha float32) of the same (h, w): the alpha covers the
    mask plus a random rim of the crop's own surroundings, fading out, and never leaves the crop.
    """
    import cv2

    s = diameter / crop.diameter
    h0, w0 = crop.mask.shape
    w, h = max(4, int(round(w0 * s))), max(4, int(round(h0 * s)))
    rgb = cv2.resize(crop.rgb, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
    m = cv2.resize(crop.mask.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        rgb, m = rgb[:, ::-1], m[:, ::-1]
    angle = float(rng.uniform(0, 360))
    side = int(math.ceil(math.hypot(w, h))) + 2
    rot = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    rot[:, 2] += np.array([(side - w) / 2, (side - h) / 2])

    def warp(a: np.ndarray, flags: int) -> np.ndarray:
        out = cv2.warpAffine(
            np.ascontiguousarray(a), rot, (side, side), flags=flags, borderValue=0.0
        )
        return np.asarray(out, dtype=np.float32)

    rgb_r = warp(rgb, cv2.INTER_LINEAR)
    m_r = warp(m, cv2.INTER_LINEAR)
    valid = warp(np.ones((h, w), np.float32), cv2.INTER_NEAREST)
    valid = np.asarray(cv2.erode(valid, np.ones((3, 3), np.uint8)), dtype=np.float32)
    mask = m_r > 0.5
    rim = int(rng.integers(1, max(2, int(0.12 * diameter)) + 1))
    ker = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * rim + 1, 2 * rim + 1))
    alpha = cv2.dilate(mask.astype(np.float32), ker)
    alpha = cv2.GaussianBlur(alpha, (0, 0), max(0.8, rim / 2)) * valid
    alpha = np.maximum(alpha, mask.astype(np.float32) * valid)
    return rgb_r, mask, alpha


def _stain_jitter(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """One mild hue/saturation/brightness change for the whole tile (uint8 RGB in and out)."""
    import cv2

    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-5, 5)) % 180
    hsv[..., 1] *= rng.uniform(0.75, 1.25)
    hsv[..., 2] *= rng.uniform(0.9, 1.08)
    out = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB)
    if rng.random() < 0.3:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.3, 0.9))
    return np.asarray(out)


@dataclass
class MosaicMaker:
    """Makes mosaics from the crops of one split (``by_group``: slide -> crop indices).

    Background textures are quilted once per slide (``textures`` of them, each 1.5 tiles wide, drawn
    from a generator seeded by ``seed`` and the slide's rank) and every mosaic takes a random window
    of one, turned and mirrored: quilting is the slow part, and a bank keeps the data set identical
    whichever tiles a resumed build still had to make.
    """

    crops: list[Crop]
    by_group: dict[str, list[int]]
    size: int = 384
    mpp: float = 2.0
    glom_um: tuple[float, float] = (100.0, 250.0)
    per_tile: tuple[int, int] = (0, 5)
    glass: float = 0.4
    crop_mpp: float | None = None
    seed: int = 0
    textures: int = 4
    negatives: tuple[int, int] = (1, 4)  # unlabelled pastes of other tissue per mosaic
    poisson: float = 0.7  # share of pastes blended by Poisson editing (else alpha)

    def __post_init__(self) -> None:
        self.groups = sorted(self.by_group)
        self.pool = [i for g in self.groups for i in self.by_group[g]]
        self.bank: dict[str, list[np.ndarray]] = {}
        everything = [p for i in self.pool for p in self.crops[i].corners]
        if not everything:
            raise GlomsslError(
                "no crop has background around its glomerulus (masks fill the crops)"
            )
        side = int(self.size * 1.5)
        for rank, g in enumerate(self.groups):
            rng = np.random.default_rng([self.seed, 7, rank])
            patches = [p for i in self.by_group[g] for p in self.crops[i].corners] or everything
            typical = float(
                np.mean(
                    [
                        self.diameter(rng, self.crops[i]) / self.crops[i].diameter
                        for i in self.by_group[g]
                    ]
                )
            )
            self.bank[g] = [
                quilt_background(rng, patches, side, typical * float(rng.uniform(0.8, 1.25)))
                for _ in range(self.textures)
            ]

    def diameter(self, rng: np.random.Generator, c: Crop) -> float:
        """A glomerulus diameter in working pixels for crop ``c``."""
        if self.crop_mpp is not None:
            return c.diameter * self.crop_mpp / self.mpp * float(rng.uniform(0.9, 1.1))
        lo, hi = math.log(self.glom_um[0]), math.log(self.glom_um[1])
        return math.exp(rng.uniform(lo, hi)) / self.mpp

    def background(self, rng: np.random.Generator, group: str) -> np.ndarray:
        tex = self.bank[group][int(rng.integers(len(self.bank[group])))]
        y, x = (int(rng.integers(tex.shape[i] - self.size + 1)) for i in (0, 1))
        win = np.rot90(tex[y : y + self.size, x : x + self.size], int(rng.integers(4)))
        return np.array(win[:, ::-1] if rng.random() < 0.5 else win, dtype=np.float32)

    def make(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One mosaic: (size, size, 3) uint8 RGB and (N, 4) float boxes of its glomeruli."""
        import cv2

        size = self.size
        group = self.groups[int(rng.integers(len(self.groups)))]
        own = self.by_group[group]
        canvas = self.background(rng, group)
        tissue = np.ones((size, size), np.float32)
        if rng.random() < self.glass:
            field = _smooth_field(rng, size, int(rng.integers(2, 5)))
            tissue = (field > rng.uniform(0.25, 0.65)).astype(np.float32)
            tissue = np.asarray(cv2.GaussianBlur(tissue, (0, 0), 1.0), dtype=np.float32)
            bright = np.concatenate([self.crops[i].rgb[::4, ::4].reshape(-1, 3) for i in own[:8]])
            glass_rgb = np.clip(np.percentile(bright, 99.5, axis=0), 215, 250).astype(np.float32)
            glass_img = glass_rgb + rng.normal(0, 2.0, (size, size, 3)).astype(np.float32)
            canvas = canvas * tissue[..., None] + glass_img * (1 - tissue[..., None])
        boxes: list[tuple[float, float, float, float]] = []
        circles: list[tuple[float, float, float]] = []
        for _ in range(int(rng.integers(self.negatives[0], self.negatives[1] + 1))):
            self._paste_negative(rng, canvas, tissue)
        for _ in range(int(rng.integers(self.per_tile[0], self.per_tile[1] + 1))):
            pool = own if rng.random() < 0.75 else self.pool
            c = self.crops[pool[int(rng.integers(len(pool)))]]
            d = self.diameter(rng, c)
            placed = self._paste(rng, canvas, tissue, c, d, circles)
            if placed is not None:
                boxes.append(placed)
                circles.append(((placed[0] + placed[2]) / 2, (placed[1] + placed[3]) / 2, d / 2))
        img = _stain_jitter(rng, np.clip(canvas, 0, 255).astype(np.uint8))
        return img, np.asarray(boxes, dtype=np.float64).reshape(-1, 4)

    def _paste(
        self,
        rng: np.random.Generator,
        canvas: np.ndarray,
        tissue: np.ndarray,
        c: Crop,
        d: float,
        circles: list[tuple[float, float, float]],
    ) -> tuple[float, float, float, float] | None:
        """Paste one glomerulus where it overlaps no other and shows enough; its box, or None."""
        size = self.size
        rgb, mask, alpha = _transform_crop(rng, c, d)
        side = mask.shape[0]
        ys, xs = np.nonzero(mask)
        area = float(len(xs))
        for _try in range(30):
            cx = float(rng.uniform(-0.3 * d, size + 0.3 * d))
            cy = float(rng.uniform(-0.3 * d, size + 0.3 * d))
            if any(math.hypot(cx - x, cy - y) < (r + d / 2) * 1.02 for x, y, r in circles):
                continue
            ix, iy = int(min(max(cx, 0), size - 1)), int(min(max(cy, 0), size - 1))
            if tissue[iy, ix] < 0.5 and rng.random() < 0.85:
                continue
            x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
            gx, gy = xs + x0, ys + y0
            inside = (gx >= 0) & (gx < size) & (gy >= 0) & (gy < size)
            if inside.sum() < MIN_VISIBLE * area:
                continue
            self._blend(rng, canvas, rgb, alpha, x0, y0)
            gx, gy = gx[inside], gy[inside]
            return float(gx.min()), float(gy.min()), float(gx.max() + 1), float(gy.max() + 1)
        return None

    def _blend(
        self,
        rng: np.random.Generator,
        canvas: np.ndarray,
        src: np.ndarray,
        alpha: np.ndarray,
        x0: int,
        y0: int,
    ) -> None:
        """Put ``src`` (side x side) at (x0, y0) of the canvas, in place, through ``alpha``.

        With probability ``poisson`` the paste is Poisson-blended (OpenCV's seamless cloning: the
        paste keeps its own gradients and takes the colours of the canvas at its rim), so no step in
        colour or brightness marks where a glomerulus was pasted -- a cue no real slide has.
        """
        import cv2

        size = self.size
        side = src.shape[0]
        if rng.random() < self.poisson:
            m = (alpha > 0.5).astype(np.uint8)
            ys, xs = np.nonzero(m)
            if len(xs) > 16:
                pad = side + 2
                big = cv2.copyMakeBorder(
                    np.clip(canvas, 0, 255).astype(np.uint8), pad, pad, pad, pad, cv2.BORDER_REFLECT
                )
                bx0, by0, bx1, by1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
                part = np.ascontiguousarray(np.clip(src[by0:by1, bx0:bx1], 0, 255).astype(np.uint8))
                pm = np.zeros((by1 - by0 + 2, bx1 - bx0 + 2), np.uint8)
                pm[1:-1, 1:-1] = m[by0:by1, bx0:bx1] * 255
                part = cv2.copyMakeBorder(part, 1, 1, 1, 1, cv2.BORDER_REPLICATE)
                cx = pad + x0 + (bx0 + bx1) // 2
                cy = pad + y0 + (by0 + by1) // 2
                try:
                    out = cv2.seamlessClone(part, big, pm, (int(cx), int(cy)), cv2.NORMAL_CLONE)
                    canvas[:] = out[pad : pad + size, pad : pad + size].astype(np.float32)
                    return
                except cv2.error:  # pragma: no cover - falls back to alpha blending
                    pass
        tx0, ty0 = max(0, x0), max(0, y0)
        tx1, ty1 = min(size, x0 + side), min(size, y0 + side)
        a = alpha[ty0 - y0 : ty1 - y0, tx0 - x0 : tx1 - x0, None]
        part = src[ty0 - y0 : ty1 - y0, tx0 - x0 : tx1 - x0]
        canvas[ty0:ty1, tx0:tx1] = canvas[ty0:ty1, tx0:tx1] * (1 - a) + part * a

    def _paste_negative(
        self, rng: np.random.Generator, canvas: np.ndarray, tissue: np.ndarray
    ) -> None:
        """An unlabelled glomerulus-sized blob of other tissue texture, pasted like a glomerulus.

        With real pastes only ever being glomeruli, a detector could learn "pasted thing = glomerulus";
        distractors pasted the same way (another slide's texture, at another scale) take that away.
        """
        import cv2

        lo, hi = self.glom_um
        d = math.exp(rng.uniform(math.log(lo), math.log(hi))) / self.mpp
        side = max(8, int(d * rng.uniform(1.0, 1.3)))
        group = self.groups[int(rng.integers(len(self.groups)))]
        tex = self.bank[group][int(rng.integers(len(self.bank[group])))]
        grab = min(tex.shape[0], max(8, int(side * rng.uniform(0.6, 1.6))))
        y, x = (int(rng.integers(tex.shape[i] - grab + 1)) for i in (0, 1))
        src = cv2.resize(
            tex[y : y + grab, x : x + grab], (side, side), interpolation=cv2.INTER_LINEAR
        )
        yy, xx = np.mgrid[:side, :side].astype(np.float32) + 0.5
        ang = rng.uniform(0, np.pi)
        u = (xx - side / 2) * np.cos(ang) + (yy - side / 2) * np.sin(ang)
        v = -(xx - side / 2) * np.sin(ang) + (yy - side / 2) * np.cos(ang)
        r = np.hypot(u / (side / 2 * 0.95), v / (side / 2 * rng.uniform(0.65, 0.95)))
        alpha = np.clip((1.0 - r) * side / 6, 0, 1).astype(np.float32)
        for _ in range(10):
            x0 = int(rng.integers(-side // 3, self.size - 2 * side // 3))
            y0 = int(rng.integers(-side // 3, self.size - 2 * side // 3))
            cy = min(max(y0 + side // 2, 0), self.size - 1)
            cx = min(max(x0 + side // 2, 0), self.size - 1)
            if tissue[cy, cx] >= 0.5:
                self._blend(rng, canvas, np.asarray(src, np.float32), alpha, x0, y0)
                return
