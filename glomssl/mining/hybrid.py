"""The hybrid panel splitter: classic whitespace cuts, arbitrated by the panel detector.

The classic XY cut (:mod:`glomssl.mining.classic`) gives pixel-exact boxes wherever panels are separated
by background, and fails in two ways: panels that touch come out as one region, and a panel with
whitespace inside (a chart and its axis labels, tissue on a white slide) comes out in pieces. The
detector sees whole panels but places their edges only roughly. The hybrid keeps the classic regions
("leaves") and lets the detector decide only what whitespace cannot:

1. split: a leaf holding two or more detector boxes that together cover most of it is cut into those
   boxes; each of their edges snaps to the leaf's edge when near it, and otherwise moves to the
   strongest change of mean colour between neighbouring rows or columns nearby (where two touching
   pictures meet);
2. merge: leaves that lie mostly inside one confident detector box become one panel, unless their
   union would swallow another leaf (two large leaves, each a quarter of the union or more, look
   like two panels, so merging them takes a more confident box than merging a chart's fragments);
3. keep: the other leaves are kept when they are as large as the classic splitter requires (leaves
   that no detector box holds keep the classic rule: small ones, such as letters and text, go).

This is the "detector boxes refined by gutter analysis" design that issue 15 names; its parameters
were set on synthetic figures of the training generator (see docs/experiments/panel-detector.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from glomssl.mining.boxes import Box, Scored, area, inter, iou, union_box
from glomssl.mining.classic import (
    DEFAULT_CLASSIC,
    ClassicParams,
    Gutters,
    LineSums,
    Valleys,
    background_colour,
    leaves,
    min_gap_for,
    off_background,
    size_limit,
    trim_box,
    xy_cut,
)

#: One-pixel gutters, no seams: the cut of :func:`hairline_cuts`.
_NO_SEAMS = ClassicParams(min_gap=1)


@dataclasses.dataclass(frozen=True)
class HybridParams:
    """Thresholds of the hybrid splitter (and of ``guided``: ``conf``, ``support``, ``merge``)."""

    conf: float = 0.15  # detector boxes below this confidence are ignored
    member: float = 0.75  # a leaf belongs to the detector box that holds this share of its area
    merge_conf: float = 0.4  # a detector box must be this confident to merge several leaves
    merge_big_conf: float = 0.8  # ... and this confident when two of them are large (>= 25%)
    split_inside: float = 0.7  # a detector box is inside a leaf when this share of it lies within
    split_cover: float = 0.6  # boxes splitting a leaf must cover this share of it together
    snap: float = 0.06  # edge search window, as a share of the leaf's width or height
    seam: float = 0.0  # a split needs seams this contrasted (jump / median jump nearby; 0: any)
    split_conf: float = 0.0  # boxes that split a leaf need this confidence (0: any kept box)
    small: float = 1.0  # 1: a leaf one box holds is kept down to min_side; 0: the classic size rule
    support: float = 0.5  # guided: share of a region's panel-size parts a detector box must confirm
    merge: float = 0.0  # guided: 1 also merges regions one confident box holds (hybrid step 2)
    letters: float = 1.0  # guided: 1 keeps a region whole when only some parts carry a letter
    letter_join: float = 0.0  # ... 1: only letter-high pieces join into letter tokens
    letter_one: float = 1.0  # ... 1: kept whole only when exactly one part carries a letter
    fallback: float = 0.0  # guided: 1 splits at detector boxes where no hairline cut exists; 2 also
    # where hairline cuts exist but are not confirmed
    distinct: float = 0.0  # guided: 1 lets only a box that matches the region better than every
    # part veto a split as "one whole panel" (not the box of its largest part)
    nested: float = 0.0  # guided: 1 also splits an unconfirmed part of a confirmed cut at its
    # detector boxes, under the same checks (section 17)
    letter_conf: float = 0.0  # guided: the letter guard gives way when every part has a detector
    # box this confident (0: never; section 26)
    letter_corner: float = 0.0  # guided: 1: the one lettered part must be the region's top-left
    # part, where a panel's letter sits (section 30)
    fragments: float = 0.0  # guided (with merge): a whitespace leaf no detector box holds is
    # dropped as text (a chart's tick labels) when both its sides are under this many times the
    # size limit and under ``fragment_ink`` of it is ink (0: off; section 46)
    fragment_ink: float = 0.3
    tiny: float = 0.0  # guided: regions are cut down to this many px (and ``tiny_share`` of the
    # figure's short side) instead of --min-side and 6%; a panel under --min-side is kept only when
    # it looks like a picture (see tiny_picture; 0: off; section 49)
    tiny_share: float = 0.03
    tiny_ink: float = 0.7  # ... at least this share of ink
    tiny_std: float = 10.0  # ... grey levels at least this spread (not a solid patch)
    tiny_long: float = 32.0  # ... a long side at least this many px (not a letter)
    tiny_flat: float = 0.0  # ... a box under this many px high and wider than high is a
    # line of words, not a lane: not panel-size in guided's cuts, not kept (0: off; section 64)
    tiny_upright: float = 0.0  # guided (with merge): a whitespace region at least this many times
    # higher than wide is large enough when it is ``tiny`` px wide and as high as the size limit (a
    # lane or column, which real layouts draw upright), though narrower than the limit, if at least
    # ``tiny_fill`` of it is ink or pale (a rotated word has blank space between letters; 0: off;
    # section 65)
    tiny_fill: float = 0.9
    pictures: float = 0.0  # merging (hybrid step 2, guided's merge): regions one detector box
    # holds stay apart when each has a long side of at least ``tiny_long`` px and at least this
    # share of them look like pictures (see tiny_picture): pictures side by side, not a chart's
    # pieces (0: off; section 50)
    dominant: float = 0.0  # merging: regions one detector box holds are joined only when the
    # largest of them has at least this share of their summed area (a chart's plot with its thin
    # label pieces); members of similar size stay apart (0: off; section 54)
    label_member: float = 0.0  # merging: where a detector box holds a panel-size region (both
    # sides at least the size limit, or an upright lane), a region that is not panel-size and at
    # most half as thick as the largest such region (its short side against that one's) is a label
    # strip: it belongs to that box when the box holds this share of it (an axis label the box
    # clips) and is no rival panel in the ``dominant`` test (a small chart's plot beside label
    # strips as large as it; 0: off; section 67)
    strokes: float = 0.0  # merging: in the ``dominant`` test, where exactly one of the regions a
    # detector box holds could stand as a panel (panel-size, or a picture: see tiny_picture) and it
    # is a chart's plot framed by its axes (see plot_frame: straight lines along two adjacent sides
    # running at least this share of them), the rest are strokes (a small chart's tick labels, as
    # large as its plot together), not rivals, when no other region reaches into the joined box
    # (0: off; section 69, which replaced section 68's test on the joined box)
    plot_small: float = 0.0  # ... 1: the axes are looked for in a third of the plot's sides, not a
    # quarter (outward tick marks set a small plot's axis a few px in), and a framed plot at least
    # ``tiny`` px across can stand though under the size limit (0: off; section 70)
    plot_lane: float = 0.0  # guided, with ``strokes``: an upright region narrower than the size
    # limit, at least this many px wide and as high as the limit, that is a chart's plot with its
    # axes at the bottom left (see narrow_plot) stands as a panel: a plot squeezed into a narrow
    # lane (0: off; sections 71-72)
    lane_axis: float = 0.0  # guided, with ``plot_lane``: in an upright lane at least 12 px wide and
    # narrower than the size limit, the y axis is sought in this share of its width instead of the
    # left third (a chart shrunk from print size into a narrow lane: its tick labels fill the
    # third); also when join_plot_labels tests such a lane (0: off; section 82)
    lane_title: float = 0.0  # ... 1: a lane that passes only by that wider search is dropped when
    # a loose region that is no picture stands beside its left, within its width (see lane_piece):
    # the labels of a chart drawn at 512 px, of which the lane is only the plot (0: off; section 83)
    lane_label: float = 0.0  # ... with ``lane_title``, 1: only a loose region shaped like a tick
    # label counts: at least 4 px high and less than 3 times as high as wide (a chart's rotated y
    # title beside a lane shrunk from print size, or a speck, is none; see lane_piece; 0: off;
    # section 85)
    lane_join: float = 0.0  # guided, with ``plot_lane``, 1: an upright box that is no narrow plot
    # alone (see narrow_plot) is tested with the rotated y title that stands loose beside its left
    # joined (a region at least 3 times as high as wide, at most 3 px away, within the box's
    # height) and, when the two pass together, stands as one panel: a chart shrunk from print size
    # into a lane 8-11 px wide once its title is cut off (see titled_lane; 0: off; section 88)
    lane_x: float = 0.0  # ... 1: in that wider search, a lane at least 3 times as high as wide
    # also passes with its x axis measured from its y axis rightwards, not across the whole lane (a
    # chart whose tick labels and y title fill most of a narrow lane: its x axis is shorter than
    # half the lane; see lane_corner; 0: off; section 86)
    shaded: float = 0.0  # guided, 1: a chart's plot drawn on a pale flat panel crossed by grid
    # lines (ggplot2's default theme) is marked as ink before any cut, so its grid lines are no
    # gutters and the panel no background (see glomssl.mining.shaded; 0: off; section 89)
    plot_labels: float = 0.0  # guided, with ``strokes``: a returned box that is a chart's plot with
    # its axes at the bottom left takes in the regions no returned box holds that sit beside its
    # left side or under its bottom, at most this share of the figure's long side away and no
    # larger than it (its tick labels and axis titles, which whitespace cut off; see
    # join_plot_labels; 0: off; section 73)
    ringing: float = 0.0  # guided, on a JPEG figure: the whitespace cuts read a line as blank when
    # none of its pixels is more than this many grey levels off the background and only a few are
    # ink at all (a JPEG's ringing along a gutter; see classic.Gutters; 0: off; section 74)
    ridge: float = 0.0  # guided, with ``ringing`` and ``hairline``, on a JPEG figure: the hairline
    # cuts also read as blank a run of at most three lines with no pixel past the ringing level
    # when the line on each side holds at least this share of such pixels (a gutter 1-3 px wide
    # between two pictures, blurred pale by the JPEG; see classic.ridge_lines; 0: off; section 76)
    ridge_reach: float = 0.0  # ... and the line on each side may lie this many lines further out
    # (a figure shrunk from a larger size blends the picture edge beside the gutter too; 0: the
    # lines next to the run, as in section 76; section 77)
    pale: float = 0.0  # guided: returned boxes grow back over pale picture edges (bare glass) whose
    # pixels differ from the background by more than this many grey levels but less than the ink
    # mask's 30 (see classic.grow_pale; 0: off; section 57)
    pale_share: float = 0.6  # ... on at least this share of the line
    tiny_pale: float = 0.0  # guided, with ``tiny`` and ``pale``: 1 grows boxes over pale edges
    # before the picture test of panels under --min-side, and the test counts pale pixels as ink (a
    # pale narrow picture is not a label; 0: off; sections 58 and 60)
    hairline: float = 0.0  # guided: a returned box is cut at blank lines one pixel wide or more
    # when two or more parts are panel-size pictures, the pieces left over hold at most
    # ``hairline_rest`` of it and its largest part holds under this share of the parts' summed area:
    # pictures of similar size, not a picture with small close-ups (0: off; section 60)
    hairline_rest: float = 0.05
    hairline_plots: float = 0.0  # ... 1: a part may also be a chart's plot with its axes at the
    # bottom left (see axes_corner) when at least half of the parts are pictures: a row of narrow
    # pictures with a chart among them, which the picture test alone kept whole (0: off; section 79)
    valley: float = 0.0  # ... then every box is cut again the same way, with a run of at most
    # three lines read as blank when it is at most this share as far off the background as the
    # lines beside it (a gutter of a figure shrunk from print size, blended with the pictures'
    # edges), unless a part is a block of flat colour (a bar); see classic.valley_lines and
    # flat_colour (0: off; section 80)
    hairline_pale: float = 0.0  # ... 1: the blank lines and the picture test are read on the ink
    # mask with pale areas at least 3 px across counted (bare glass, not a JPEG's ringing along a
    # gutter), so a lane with glass in it is one picture, not pieces (0: off; section 66)
    text: float = 0.0  # guided: a returned box whose long side is under this share of the figure's
    # long side, with under ``text_ink`` of it ink (pale pixels counted) and no connected stroke
    # spanning ``text_stroke`` of its long side, is a line of text (a chart's rotated tick label),
    # not a panel, and is dropped (0: off; section 61)
    text_ink: float = 0.25
    text_run: float = 0.0  # ... unless a straight line of ink runs across at least this share of
    # its long side: a small chart's axis, which a rotated word lacks (0: off; section 68)
    text_stroke: float = 0.8
    pale_join: float = 0.0  # guided, with ``pale``: two boxes that stood at least this many px
    # apart and, grown over their pale edges, line up side to side are joined when every line of
    # the gap between them is pale content (at least ``pale_share`` pale or ink: bare glass inside
    # one picture, not a gutter), unless detector boxes confirm each of them (0: off; section 63)
    rescue: float = 0.0  # guided: where a detector box at least this confident holds two or more
    # whitespace regions (half of each or more) and every one was dropped (too small, or text),
    # their union comes back as one panel when one of them is a plot framed by its axes, the union
    # is at least --min-side across, overlaps no kept panel and takes in no other region: a small
    # chart that whitespace cut into pieces too small to stand (see rescue_lost; 0: off; section 78)


def _edge(profile: np.ndarray, pos: int, tol: int) -> tuple[int, float]:
    """The boundary (index of the first element after it) with the largest jump of ``profile``
    within ``tol`` of ``pos``, and its contrast: that jump over the median jump nearby (a seam
    between two pictures stands out; a texture inside one picture does not). ``profile`` is (L, C)
    mean colours along one axis."""
    lo, hi = max(1, pos - tol), min(len(profile) - 1, pos + tol)
    if hi < lo:
        return pos, 0.0
    jumps = np.abs(profile[lo : hi + 1] - profile[lo - 1 : hi]).sum(axis=1)  # (hi - lo + 1,)
    k = int(np.argmax(jumps))
    return lo + k, float(jumps[k] / (np.median(jumps) + 1.0))


def refine(arr: np.ndarray, leaf: Box, det: Box, snap: float) -> tuple[Box, float]:
    """Detector box ``det`` inside ``leaf``, each edge snapped to the leaf or moved to the nearby
    colour seam; returns the box and the weakest contrast of the seams it moved to (inf: none)."""
    lx0, ly0, lx1, ly1 = leaf
    x0, y0 = max(lx0, det[0]), max(ly0, det[1])
    x1, y1 = min(lx1, det[2]), min(ly1, det[3])
    if x1 - x0 < 2 or y1 - y0 < 2:
        return (x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)), 0.0
    tx, ty = max(3, round(snap * (lx1 - lx0))), max(3, round(snap * (ly1 - ly0)))
    cols = arr[y0:y1, lx0:lx1].astype(np.float32).mean(axis=0)  # (W, 3) along the leaf's width
    rows = arr[ly0:ly1, x0:x1].astype(np.float32).mean(axis=1)  # (H, 3) along its height
    contrast = [np.inf]
    edges: list[int | None] = []
    for near_start, pos, tol, prof, base in (
        (x0 - lx0 <= tx, x0, tx, cols, lx0),
        (lx1 - x1 <= tx, x1, tx, cols, lx0),
        (y0 - ly0 <= ty, y0, ty, rows, ly0),
        (ly1 - y1 <= ty, y1, ty, rows, ly0),
    ):
        if near_start:  # close to the leaf's own edge: take it
            edges.append(None)
            continue
        at, c = _edge(prof, pos - base, tol)
        edges.append(base + at)
        contrast.append(c)
    nx0 = lx0 if edges[0] is None else edges[0]
    nx1 = lx1 if edges[1] is None else edges[1]
    ny0 = ly0 if edges[2] is None else edges[2]
    ny1 = ly1 if edges[3] is None else edges[3]
    if nx1 - nx0 < 2 or ny1 - ny0 < 2:
        return (x0, y0, x1, y1), 0.0
    return (nx0, ny0, nx1, ny1), min(contrast)


def hybrid_boxes(
    arr: np.ndarray,
    ink: np.ndarray,
    detections: Sequence[Scored],
    min_side: int = 24,
    params: HybridParams = HybridParams(),
    classic: ClassicParams = DEFAULT_CLASSIC,
) -> list[Scored]:
    """Panels of one figure (unsorted, untrimmed): classic leaves split/merged by detections.

    ``arr`` is the (H, W, 3) figure, ``ink`` its (H, W) ink mask, ``detections`` the detector's
    (box, confidence) pairs in figure pixels. Scores are detector confidences (for leaves no detector
    box holds: the share of ink in the leaf).
    """
    regions = leaves(arr, ink, min_side, classic)
    limit = size_limit(ink.shape, min_side)
    dets = _kept_dets(detections, params.conf, ink.shape)
    # 1. split leaves that hold several detector boxes (touching panels)
    pieces: list[tuple[Box, float | None]] = []  # (box, confidence of the box that cut it | None)
    for leaf in regions:
        cuts = _detector_split(arr, ink, leaf, dets, params)
        pieces.extend(cuts or [(leaf, None)])
    return _arbitrate(pieces, dets, params, arr, ink, min_side, limit)


def _detector_split(
    arr: np.ndarray, ink: np.ndarray, leaf: Box, dets: Sequence[Scored], params: HybridParams
) -> list[tuple[Box, float | None]]:
    """The hybrid's step 1 on one region: its detector boxes (confidence >= ``split_conf``, at
    least ``split_inside`` inside it, two or more covering ``split_cover`` of it), edges refined to
    the region or to colour seams of contrast >= ``seam``, trimmed to ink; [] when it does not
    split."""
    inside = [
        (d, s)
        for d, s in dets
        if inter(d, leaf) >= params.split_inside * area(d) and s >= params.split_conf
    ]
    covered = sum(inter(d, leaf) for d, _ in inside)
    cuts: list[tuple[Box, float | None]] = []
    if len(inside) >= 2 and covered >= params.split_cover * area(leaf):
        refined = [(refine(arr, leaf, d, params.snap), s) for d, s in inside]
        if min(c for (_, c), _ in refined) >= params.seam:
            for (box, _), s in refined:
                piece = trim_box(ink, box)
                if piece is not None:
                    cuts.append((piece, s))
    return cuts


def _arbitrate(
    pieces: list[tuple[Box, float | None]],
    dets: list[Scored],
    params: HybridParams,
    arr: np.ndarray,
    ink: np.ndarray,
    min_side: int,
    limit: int,
    lane: Callable[[Box], bool] | None = None,
) -> list[Scored]:
    """Steps 2 and 3 of the hybrid: ``pieces`` are (box, confidence of the detector box that cut it,
    or None for a whitespace region); regions that one confident detector box holds are merged, the
    rest kept by the size rules, under which ``lane`` (when given) admits a narrow region too."""

    def sized(b: Box, least: int) -> bool:
        return (b[2] - b[0] >= least and b[3] - b[1] >= least) or (lane is not None and lane(b))

    def strip(b: Box, short: int) -> bool:
        """A label strip beside a panel-size region whose short side is ``short`` (0: none)."""
        return short > 0 and not sized(b, limit) and 2 * _short_side(b) <= short

    # 2. group the whitespace regions by the detector box holding most of each
    groups: dict[int, list[int]] = {}
    loose: dict[int, list[int]] = {}  # label_member: small regions the box holds less of
    for i, (p, cut) in enumerate(pieces):
        if cut is not None or not dets:
            continue
        shares = [inter(p, d) / max(1, area(p)) for d, _ in dets]
        j = int(np.argmax(shares))
        if shares[j] >= params.member:
            groups.setdefault(j, []).append(i)
        elif params.label_member and shares[j] >= params.label_member and not sized(p, limit):
            loose.setdefault(j, []).append(i)
    out: list[Scored] = []
    used: set[int] = set()
    for j, members in groups.items():
        d, s = dets[j]
        short = 0  # label_member: the short side of the largest panel-size region the box holds
        if params.label_member:
            anchors = [pieces[i][0] for i in members if sized(pieces[i][0], limit)]
            if anchors:  # thin strips beside a panel-size region are its labels
                short = _short_side(max(anchors, key=area))
                members = members + [i for i in loose.get(j, []) if strip(pieces[i][0], short)]
        u = union_box([pieces[i][0] for i in members])
        big = sum(area(pieces[i][0]) >= 0.25 * area(u) for i in members)
        need = params.merge_big_conf if big >= 2 else params.merge_conf
        if len(members) >= 2 and params.dominant:
            rivals = [pieces[i][0] for i in members if not strip(pieces[i][0], short)]
            if params.strokes:  # one piece that could stand as a panel, the rest strokes
                able = [
                    b
                    for b in rivals
                    if sized(b, limit)
                    or tiny_picture(arr, ink, b, params)
                    or (
                        params.plot_small
                        and _short_side(b) >= max(1, params.tiny)
                        and plot_frame(arr, ink, b, params)
                    )
                ]
                alone = not any(  # ... and no other region reaches into the joined box
                    inter(u, pieces[k][0]) > 0 for k in range(len(pieces)) if k not in members
                )
                if len(able) == 1 and alone and plot_frame(arr, ink, able[0], params):
                    rivals = able  # ... a chart's plot, framed by its axes
            sizes = [area(b) for b in rivals]
            if len(sizes) >= 2 and max(sizes) < params.dominant * sum(sizes):
                continue  # pieces of similar size: several panels, not one cut apart (step 3)
        if len(members) >= 2 and params.pictures:
            boxes = [pieces[i][0] for i in members]
            if all(max(b[2] - b[0], b[3] - b[1]) >= params.tiny_long for b in boxes):
                seen = sum(tiny_picture(arr, ink, b, params) for b in boxes)
                if seen >= params.pictures * len(boxes):
                    continue  # pictures side by side: each stays its own panel (step 3)
        if len(members) >= 2 and s >= need:
            others = (k for k in range(len(pieces)) if k not in members)
            if not any(inter(u, pieces[k][0]) > 0.5 * area(pieces[k][0]) for k in others):
                out.append((u, s))
                used.update(members)
        elif len(members) == 1:  # a leaf the detector confirms: kept down to min_side
            b = pieces[members[0]][0]
            least = min_side if params.small else limit
            if sized(b, least):
                out.append((b, s))
                used.add(members[0])
    # 3. the rest: detector-cut pieces always, other leaves when large enough and not text
    held = {i for members in groups.values() for i in members}
    for i, (p, cut) in enumerate(pieces):
        if i in used:
            continue
        if cut is not None:
            out.append((p, cut))
        elif sized(p, limit):
            share = float(ink[p[1] : p[3], p[0] : p[2]].mean())
            if i not in held and _text_fragment(p, share, limit, params):
                continue
            out.append((p, share))
        elif narrow_plot(arr, ink, p, limit, params):
            out.append((p, float(ink[p[1] : p[3], p[0] : p[2]].mean())))
        elif params.lane_join:  # ... or with its loose y title beside it (section 88)
            joined = titled_lane(
                p,
                [q for q, _ in pieces],
                lambda u: sized(u, limit) or narrow_plot(arr, ink, u, limit, params),
                params,
            )
            if joined is not None:
                out.append((joined, float(ink[p[1] : p[3], p[0] : p[2]].mean())))
    return out


_PLOT_LEAST = 8  # px: rescue_lost's framed plot is at least this wide and high (not a speck)
_PLOT_SHARE = 0.1  # ... and holds this share of the union's area (not a word in a line of text)


def rescue_lost(
    arr: np.ndarray,
    ink: np.ndarray,
    kept: Sequence[Scored],
    dets: Sequence[Scored],
    regions: Callable[[], Sequence[Box]],
    min_side: int,
    params: HybridParams,
) -> list[Scored]:
    """The boxes to add to ``kept`` (``params.rescue``, section 78 of
    docs/experiments/panel-detector.md). A small chart whose plot, tick labels and axis titles
    whitespace cut apart can lose every piece to the size and text filters. For each detector box
    in ``dets`` at least ``rescue`` confident that overlaps no kept box, most confident first, this
    takes the whitespace regions (``regions()``, asked for only when some box needs them) of which
    the box holds half or more (a box clips a chart's labels). Their union comes back as one
    panel, with the box's confidence, when there are two or more, one of them is a plot framed by
    its axes (see plot_frame) at least 8 px a side and a tenth of the union's area, the union is at
    least ``min_side`` px across, no kept or added box overlaps it by more than a tenth of the
    smaller of the two, and no other region lies more than half inside it."""
    if not params.rescue:
        return []
    boxes = [b for b, _ in kept]
    added: list[Scored] = []

    def overlaps(u: Box) -> bool:
        return any(inter(u, k) > 0.1 * min(area(u), area(k)) for k in boxes)

    for d, s in sorted(dets, key=lambda x: -x[1]):
        if s < params.rescue or overlaps(d):
            continue
        pieces = regions()
        held = [r for r in pieces if inter(r, d) >= 0.5 * area(r)]
        if len(held) < 2:
            continue
        u = union_box(held)
        if not any(
            _short_side(r) >= _PLOT_LEAST
            and area(r) >= _PLOT_SHARE * area(u)
            and plot_frame(arr, ink, r, params)
            for r in held
        ):
            continue
        if u[2] - u[0] < min_side or u[3] - u[1] < min_side or overlaps(u):
            continue
        if any(inter(r, u) > 0.5 * area(r) for r in pieces if r not in held):
            continue
        added.append((u, s))
        boxes.append(u)
    return added


def _short_side(b: Box) -> int:
    return min(b[2] - b[0], b[3] - b[1])


def upright_lane(box: Box, limit: int, fill: np.ndarray, params: HybridParams) -> bool:
    """Whether ``box`` is an upright lane large enough to keep though narrower than the size limit
    (``tiny_upright``, with ``tiny``): at least ``tiny`` px wide, ``limit`` px high, ``tiny_upright``
    times higher than wide and at least ``tiny_fill`` of it set in ``fill`` (the ink mask with pale
    pixels counted: a lane is filled, a rotated word has blank space between its letters)."""
    if not (params.tiny and params.tiny_upright):
        return False
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    if not (w >= max(1, round(params.tiny)) and h >= limit and h >= params.tiny_upright * w):
        return False
    return float(fill[y0:y1, x0:x1].mean()) >= params.tiny_fill


def _text_fragment(box: Box, ink_share: float, limit: int, params: HybridParams) -> bool:
    """A leaf small and sparse enough to be a chart's labels rather than a panel (``fragments``:
    both sides under that many size limits; ``fragment_ink``: less ink than that)."""
    small = max(box[2] - box[0], box[3] - box[1]) < params.fragments * limit
    return small and ink_share < params.fragment_ink


def _picture(arr: np.ndarray, ink: np.ndarray, box: Box, params: HybridParams) -> bool:
    """Whether ``box`` is filled like a picture: at least ``tiny_ink`` of it ink and grey levels
    spread at least ``tiny_std`` (a chart's plot, labels and legend are mostly background)."""
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0 or float(ink[y0:y1, x0:x1].mean()) < params.tiny_ink:
        return False
    grey = arr[y0:y1, x0:x1].astype(np.float32).mean(axis=2)
    return float(grey.std()) >= params.tiny_std


def flat_line(box: Box, params: HybridParams) -> bool:
    """Whether ``box`` is under ``tiny_flat`` px high and wider than high (with ``tiny`` set): a
    line of words, which real figures hold, rather than a narrow picture, which in real layouts
    stands upright (lanes, columns)."""
    h, w = box[3] - box[1], box[2] - box[0]
    return bool(params.tiny and params.tiny_flat) and h < params.tiny_flat and w > h


def tiny_picture(arr: np.ndarray, ink: np.ndarray, box: Box, params: HybridParams) -> bool:
    """Whether a box under --min-side looks like a picture, not a letter, a label or a legend key
    (``tiny``, section 49): at least ``tiny_ink`` of it ink, grey levels spread at least
    ``tiny_std`` (not one flat colour) and a long side of at least ``tiny_long`` px."""
    if max(box[2] - box[0], box[3] - box[1]) < params.tiny_long:
        return False
    return _picture(arr, ink, box, params)


def text_line(ink: np.ndarray, pale_ink: np.ndarray, box: Box, params: HybridParams) -> bool:
    """Whether ``box`` holds one line of text rather than a panel (``params.text``, section 61 of
    docs/experiments/panel-detector.md): small (long side under ``text`` of the figure's), sparse
    (under ``text_ink`` of ``pale_ink``, the ink mask with pale pixels counted, so a pale
    micrograph is not sparse) and made of short strokes (its largest 8-connected piece of ``ink``
    spans under ``text_stroke`` of its long side; a chart's axes or a frame run across it). With
    ``text_run``, a box that a straight line of ink crosses for that share of its long side is no
    text either (a small chart's axis)."""
    from scipy import ndimage

    x0, y0, x1, y1 = box
    long_side = max(x1 - x0, y1 - y0)
    if long_side <= 0 or long_side >= params.text * max(ink.shape[:2]):
        return False
    if params.text_run and _longest_run(ink[y0:y1, x0:x1]) >= params.text_run * long_side:
        return False  # a straight line (a chart's axis) runs across it
    if float(pale_ink[y0:y1, x0:x1].mean()) >= params.text_ink:
        return False
    labels, _ = ndimage.label(ink[y0:y1, x0:x1], structure=np.ones((3, 3), bool))
    spans = [
        max(s[0].stop - s[0].start, s[1].stop - s[1].start) for s in ndimage.find_objects(labels)
    ]
    return max(spans, default=0) < params.text_stroke * long_side


def plot_frame(arr: np.ndarray, ink: np.ndarray, box: Box, params: HybridParams) -> bool:
    """Whether ``box`` is a chart's plot (``strokes``, section 69): not filled like a picture, and
    framed by its axes: in the quarter (a third with ``plot_small``) of its height next to its top
    or bottom edge, a straight row of ink running ``strokes`` of its width, and in the quarter (a
    third) of its width next to its left or right edge, a straight column of ink running ``strokes``
    of its height (an L of axes or a whole frame; letters and tissue have no such lines)."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    if w <= 0 or h <= 0 or _picture(arr, ink, box, params):
        return False
    sub = ink[y0:y1, x0:x1]
    part = 3 if params.plot_small else 4  # a third of its sides, or a quarter
    bw, bh = max(1, w // part), max(1, h // part)
    rows = max(_row_run(sub[:bh]), _row_run(sub[h - bh :]))
    cols = max(_row_run(sub[:, :bw].T), _row_run(sub[:, w - bw :].T))
    return rows >= params.strokes * w and cols >= params.strokes * h


def axes_corner(
    arr: np.ndarray,
    ink: np.ndarray,
    box: Box,
    params: HybridParams,
    reach: float = 0.0,
    from_axis: bool = False,
) -> bool:
    """Whether ``box`` holds a chart's plot with its axes at the bottom left (sections 72-73): at
    least 8 px a side, not filled like a picture, a straight column of ink in the left third of its
    width running ``strokes`` of its height (the y axis) and a straight row in the bottom third of
    its height running ``strokes`` of its width (the x axis). ``reach``: the share of its width
    searched for the y axis instead (0: the third). ``from_axis`` (``lane_x``, section 86): the x
    axis need only run ``strokes`` of the width right of the y axis (the searched column with the
    longest run, the leftmost of equals), within that part."""
    w, h = box[2] - box[0], box[3] - box[1]
    if not params.strokes or w < 8 or h < 8 or _picture(arr, ink, box, params):
        return False
    sub = ink[box[1] : box[3], box[0] : box[2]]
    searched = sub[:, : max(1, round(w * reach) if reach else w // 3)]
    if from_axis:
        runs = _row_runs(searched.T)  # each column's longest run
        axis = int(np.argmax(runs))
        if runs[axis] < params.strokes * h:
            return False
        bottom = _row_run(sub[h - max(1, h // 3) :, axis:])
        return bottom >= params.strokes * (w - axis)
    bottom = _row_run(sub[h - max(1, h // 3) :])  # the x axis
    left = _row_run(searched.T)  # the y axis
    return bottom >= params.strokes * w and left >= params.strokes * h


#: px: ``lane_axis`` widens the y-axis search only in lanes at least this wide (in narrower ones, a
#: chart's rotated y title passes: its letters' stems make the column)
LANE_AXIS_LEAST = 12
#: ``lane_x`` measures the x axis from the y axis only in lanes at least this many times as high as
#: wide (the shape of a chart squeezed into a lane, not a piece of one)
LANE_X_TALL = 3


def lane_corner(
    arr: np.ndarray, ink: np.ndarray, box: Box, limit: int, params: HybridParams
) -> bool:
    """:func:`axes_corner`, or with ``lane_axis`` (section 82), for an upright lane at least
    :data:`LANE_AXIS_LEAST` (and ``plot_lane``) px wide, narrower than the size ``limit`` and at
    least as high as it and as its width, the same test with the y axis sought in ``lane_axis`` of
    its width: a chart drawn at print size and shrunk into a narrow lane has its tick labels fill
    the left third, and its y axis lies just past it. With ``lane_x`` (section 86), a lane at least
    :data:`LANE_X_TALL` times as high as wide also passes with its x axis measured from its y axis
    rightwards (``from_axis``): its tick labels and y title fill most of the lane."""
    if axes_corner(arr, ink, box, params):
        return True
    if not (params.lane_axis and params.plot_lane):
        return False
    w, h = box[2] - box[0], box[3] - box[1]
    if w < max(LANE_AXIS_LEAST, params.plot_lane) or w >= limit or h < max(w, limit):
        return False
    if axes_corner(arr, ink, box, params, params.lane_axis):
        return True
    return (
        bool(params.lane_x)
        and h >= LANE_X_TALL * w
        and axes_corner(arr, ink, box, params, params.lane_axis, from_axis=True)
    )


def lane_piece(
    arr: np.ndarray, ink: np.ndarray, box: Box, free: Sequence[Box], params: HybridParams
) -> bool:
    """Whether ``box``, a lane that :func:`lane_corner` passes only by the wider search of
    ``lane_axis``, is a piece of a chart rather than a whole one (``lane_title``, section 83): one
    of ``free`` (whitespace regions no returned box touches) stands beside its left side, ending at
    most the lane's width away, at least half of it level with the lane, and is not a picture.
    That is a tick label or the y title of a chart drawn with its labels at 512 px, its plot (the
    lane) cut off from them with its tick marks; a chart shrunk from print size into a lane keeps
    its labels inside the lane, and a neighbouring panel is no free region. With ``lane_label``
    (section 85) only a region shaped like a tick label counts (:func:`tick_label`): the rotated y
    title that a chart shrunk from print size leaves loose beside its lane, and specks, do not."""
    if not (params.lane_title and params.lane_axis) or axes_corner(arr, ink, box, params):
        return False
    x0, y0, _, y1 = box
    w = box[2] - x0
    for r in free:
        if r[2] > x0 or x0 - r[2] > w or min(r[3], y1) - max(r[1], y0) < 0.5 * (r[3] - r[1]):
            continue
        if params.lane_label and not tick_label(r):
            continue
        if not tiny_picture(arr, ink, r, params):
            return True
    return False


#: px: with ``lane_label``, a loose region lower than this is a speck, not a tick label
LABEL_LEAST = 4
#: ... and one at least this many times as high as wide is a rotated axis title
TITLE_TALL = 3


def tick_label(box: Box) -> bool:
    """Whether a loose region is shaped like a chart's tick label (``lane_label``, section 85): at
    least :data:`LABEL_LEAST` px high and less than :data:`TITLE_TALL` times as high as wide."""
    w, h = box[2] - box[0], box[3] - box[1]
    return h >= LABEL_LEAST and h < TITLE_TALL * w


#: px: ``lane_join`` joins a title standing at most this far left of a box
TITLE_GAP = 3


def titled_lane(
    box: Box, free: Sequence[Box], passes: Callable[[Box], bool], params: HybridParams
) -> Box | None:
    """``box`` joined with the rotated y title that stands loose beside its left, when the two
    ``passes`` together (``lane_join``, section 88: :func:`narrow_plot` where panels are kept; in
    guided's own cuts, whose size limit is the tiny one, also large enough to stand), else None.
    The title is one of ``free`` (whitespace regions no returned box touches) at least
    :data:`TITLE_TALL` times as high as wide and :data:`LABEL_LEAST` px high, ending at most
    :data:`TITLE_GAP` px left of the box and lying within its height: a chart shrunk from print
    size into a narrow lane keeps its tick labels inside the lane, but whitespace cuts its title
    off, and the lane alone is too narrow for ``lane_axis``'s wider search. Not shipped: on fresh
    figures it also took neighbouring narrow panels for titles (section 88)."""
    if not (params.lane_join and params.plot_lane and params.strokes):
        return None
    x0, y0, x1, y1 = box
    for r in free:
        rw, rh = r[2] - r[0], r[3] - r[1]
        if r[2] > x0 or x0 - r[2] > TITLE_GAP or r[1] < y0 or r[3] > y1:
            continue
        if rh < max(LABEL_LEAST, TITLE_TALL * rw):
            continue
        joined = (r[0], y0, x1, y1)
        if passes(joined):
            return joined
    return None


def narrow_plot(
    arr: np.ndarray, ink: np.ndarray, box: Box, limit: int, params: HybridParams
) -> bool:
    """Whether ``box``, narrower than the size limit, stands as a panel by ``plot_lane`` (section
    72): an upright lane (not wider than high, so not a line of words) at least ``plot_lane`` px
    wide and ``limit`` px high, holding a chart's plot with its axes at the bottom left
    (:func:`axes_corner`). Only that corner counts: a rotated word (a chart's y title cut at its
    spaces) has its letters' baseline on its right and passes :func:`plot_frame`, which takes any
    two adjacent sides (section 71)."""
    if not (params.plot_lane and params.strokes):
        return False
    w, h = box[2] - box[0], box[3] - box[1]
    if w < params.plot_lane or h < max(w, limit):
        return False
    return lane_corner(arr, ink, box, limit, params)


def join_plot_labels(
    arr: np.ndarray,
    ink: np.ndarray,
    boxes: list[Scored],
    regions: Callable[[], Sequence[Box]],
    params: HybridParams,
    limit: int = 0,
) -> list[Scored]:
    """``boxes`` with each chart plot grown over its labels (``plot_labels``, section 73). A box
    with its axes at the bottom left (:func:`axes_corner`) takes in each of ``regions()`` (the
    figure's whitespace regions, asked for only when some box is a plot) that no returned box
    touches, is not a picture, is no larger than
    the box on either side, and sits beside the box's left side (at least half of its height level
    with the box) or under its bottom (at least half of its width below the box), at most
    ``plot_labels`` of the figure's long side away; three rounds, so the y title beyond the tick
    labels joins too. The grown box is kept only when it touches no other returned box. With
    ``lane_axis``, a lane narrower than ``limit`` (the size limit; 0: none) is tested by
    :func:`lane_corner`."""
    if not (params.plot_labels and params.strokes):
        return boxes
    gap = params.plot_labels * max(ink.shape)
    kept = [b for b, _ in boxes]
    free: list[Box] | None = None  # made on first use: most boxes are no plots
    out: list[Scored] = []
    for box, score in boxes:
        if not lane_corner(arr, ink, box, limit, params):
            out.append((box, score))
            continue
        if free is None:
            free = [r for r in regions() if not any(inter(r, k) > 0 for k in kept)]
        grown, taken = box, set[int]()
        for _ in range(3):
            before = len(taken)
            for j, r in enumerate(free):
                rw, rh = r[2] - r[0], r[3] - r[1]
                if j in taken or rw > grown[2] - grown[0] or rh > grown[3] - grown[1]:
                    continue
                left = r[2] <= grown[0] and grown[0] - r[2] <= gap
                left = left and min(r[3], grown[3]) - max(r[1], grown[1]) >= 0.5 * rh
                below = r[1] >= grown[3] and r[1] - grown[3] <= gap
                below = below and min(r[2], grown[2]) - max(r[0], grown[0]) >= 0.5 * rw
                if (left or below) and not tiny_picture(arr, ink, r, params):
                    grown = union_box([grown, r])
                    taken.add(j)
            if len(taken) == before:
                break
        if grown != box and any(inter(grown, k) > 0 for k in kept if k != box):
            grown = box  # it would reach into another panel
        out.append((grown, score))
    return out


def _longest_run(mask: np.ndarray) -> int:
    """The longest run of set pixels along one row or one column of ``mask``."""
    return max(_row_run(mask), _row_run(mask.T))


def _row_run(mask: np.ndarray) -> int:
    """The longest run of set pixels along one row of ``mask``."""
    runs = _row_runs(mask)
    return int(runs.max()) if runs.size else 0


def _row_runs(mask: np.ndarray) -> np.ndarray:
    """The longest run of set pixels along each row of ``mask`` (0 for a row with none)."""
    out = np.zeros(mask.shape[0], np.int64)
    if mask.size == 0:
        return out
    padded = np.zeros((mask.shape[0], mask.shape[1] + 2), np.int8)
    padded[:, 1:-1] = mask
    edges = np.diff(padded, axis=1)
    starts, ends = np.nonzero(edges == 1), np.nonzero(edges == -1)
    np.maximum.at(out, starts[0], ends[1] - starts[1])  # row by row, edges pair up in order
    return out


def letter_tokens(
    small: Sequence[Box], shape: tuple[int, ...], join_low: bool = False
) -> list[Box]:
    """Letter-like tokens among regions too small to be panels: pieces on one line (vertical
    overlap at least half the smaller height, gap at most 0.6 x the taller height) joined,
    transitively; kept when 5 px to 6% of the figure's short side high and at most 2.5 x as wide
    as high ("a", "(a)", "A1"). ``join_low``: pieces taller than a letter take no part."""
    top = 0.06 * min(shape[:2])
    boxes = [b for b in small if not join_low or b[3] - b[1] <= top]
    group = list(range(len(boxes)))

    def root(i: int) -> int:
        while group[i] != i:
            group[i] = group[group[i]]
            i = group[i]
        return i

    boxes.sort(key=lambda b: b[1])  # by top: the pairs worth testing share rows
    for i, a in enumerate(boxes):
        for j in range(i + 1, len(boxes)):
            b = boxes[j]
            if b[1] >= a[3]:  # this one and all after it start below ``a``: no overlap
                break
            ha, hb = a[3] - a[1], b[3] - b[1]
            overlap = min(a[3], b[3]) - max(a[1], b[1])
            gap = max(a[0], b[0]) - min(a[2], b[2])
            if overlap >= 0.5 * min(ha, hb) and gap <= 0.6 * max(ha, hb):
                group[root(j)] = root(i)
    joined: dict[int, list[Box]] = {}
    for i, bx in enumerate(boxes):
        joined.setdefault(root(i), []).append(bx)
    toks = [union_box(g) for g in joined.values()]
    return [t for t in toks if 5 <= t[3] - t[1] <= top and t[2] - t[0] <= 2.5 * (t[3] - t[1])]


def carries_letter(part: Box, tokens: Sequence[Box]) -> bool:
    """Whether a letter token overlaps ``part``'s corner window: from three token heights above and
    left of its top-left corner to a quarter of its width and height inside."""
    x0, y0, x1, y1 = part
    for t in tokens:
        m = 3 * (t[3] - t[1])
        if inter(t, (x0 - m, y0 - m, x0 + (x1 - x0) // 4, y0 + (y1 - y0) // 4)) > 0:
            return True
    return False


def _kept_dets(detections: Sequence[Scored], conf: float, shape: tuple[int, ...]) -> list[Scored]:
    """Detector boxes at or above ``conf``, rounded and clipped to the (H, W) figure."""
    h, w = shape[:2]
    out: list[Scored] = []
    for b, s in detections:
        if s < conf:
            continue
        x0, y0, x1, y1 = (int(round(v)) for v in b)
        box = (max(0, x0), max(0, y0), min(w, x1), min(h, y1))
        if area(box) > 0:
            out.append((box, float(s)))
    return out


def one_lettered_panel(
    region: Box,
    parts: Sequence[Box],
    small: Sequence[Box],
    regions: Sequence[Box],
    shape: tuple[int, ...],
    limit: int,
    params: HybridParams,
) -> bool:
    """Whether some of ``region``'s ``parts`` carry a panel letter and others none: the pictures of
    one lettered panel. Letters come from the small pieces of its own cut (``small``) and the small
    ``regions`` of the figure (sides under ``limit`` px) near it. With ``params.letter_one`` only
    when exactly one part carries a letter."""
    m = max(8, round(0.1 * min(shape[:2])))
    near = (region[0] - m, region[1] - m, region[2] + m, region[3] + m)
    pieces = list(small) + [
        r for r in regions if min(r[2] - r[0], r[3] - r[1]) < limit and inter(r, near) > 0
    ]
    tokens = letter_tokens(pieces, shape, bool(params.letter_join))
    lettered = [carries_letter(p, tokens) for p in parts]
    if params.letter_corner and sum(lettered) == 1:
        first = min(range(len(parts)), key=lambda k: parts[k][0] + parts[k][1])
        if not lettered[first]:  # a label beside a row or a chart's tick label, not its letter
            return False
    if params.letter_one:
        return sum(lettered) == 1
    return any(lettered) and not all(lettered)


def guided_boxes(
    arr: np.ndarray,
    ink: np.ndarray,
    detections: Sequence[Scored],
    min_side: int = 24,
    params: HybridParams = HybridParams(),
    classic: ClassicParams = DEFAULT_CLASSIC,
    pale_ink: np.ndarray | None = None,
    gutters: Gutters | None = None,
    regions: list[Box] | None = None,
    bg: np.ndarray | None = None,
) -> list[Scored]:
    """Panels of one figure by the classic splitter, with the cuts the detector confirms.

    Each region of the classic splitter (``classic``) is cut further as ``--seams`` would (one-pixel
    gutters, seams of touching pictures) only when the detector agrees: at least ``params.support``
    of the panel-size parts have a detector box at IoU >= 0.5 (two at least), no detector box
    matches the whole region at IoU >= 0.5 more confidently than the weakest of those, and (with
    ``params.letters``) the parts are not one lettered panel: a region where exactly one part (with
    ``letter_one``; else some but not all) carries a panel letter at its top-left corner stays
    whole (docs/experiments/panel-detector.md, sections 12-13), unless every part has a detector
    box at least ``params.letter_conf`` confident (when set; section 26). With ``params.distinct``
    (off; not adopted, section 16) a box vetoes as "whole region" only if it fits the region better
    than every part.

    With ``params.fallback`` 1, a region whose fine cut finds no two panel-size parts is split at
    its detector boxes as the hybrid's step 1 does (:func:`_detector_split`), under the same
    whole-region and letter checks (section 14); with 2, so is every region that would otherwise
    stay whole (section 15). Otherwise the region stays as the classic splitter leaves it, so where
    the detector disagrees or sees nothing the result is the classic one. With ``params.merge``,
    regions that one confident detector box holds are then merged as the hybrid does (a chart cut
    from its labels by whitespace). Scores: the confirming or cutting box's confidence, else the
    share of ink.

    ``pale_ink``: the ink mask with pale pixels (``params.pale``) counted, when the caller has it
    already; otherwise it is made here on first use. ``gutters`` (a JPEG figure, with
    ``params.ringing``): the whitespace cuts read lines with a JPEG's ringing as blank.
    ``regions``: the classic splitter's regions for these arguments, when the caller has them.
    ``bg``: the figure's background colour (C,), when the caller has it (``valley``).
    """
    share = params.tiny_share if params.tiny else 0.06
    limit = size_limit(ink.shape, min_side, share)
    fine = dataclasses.replace(ClassicParams.touching(), background=classic.background)
    dets = _kept_dets(detections, params.conf, ink.shape)
    lines: LineSums | None = None  # built on first use: most figures never need it

    def ink_share(b: Box) -> float:
        return float(ink[b[1] : b[3], b[0] : b[2]].mean())

    def big(b: Box) -> bool:
        return b[2] - b[0] >= limit and b[3] - b[1] >= limit and not flat_line(b, params)

    fill: list[np.ndarray] = []  # the ink mask with pale pixels counted, made on first use

    def pale_fill() -> np.ndarray:
        if pale_ink is not None:
            return pale_ink
        if not fill:
            bg = background_colour(arr, classic)
            fill.append(ink | off_background(arr, bg, params.pale) if params.pale else ink)
        return fill[0]

    def lane(b: Box) -> bool:
        return upright_lane(b, limit, pale_fill(), params)

    def glass() -> np.ndarray:
        """The ink mask with pale areas at least 3 px across (bare glass in a picture) counted:
        a thinner pale line is a JPEG's ringing along a gutter, which must stay blank."""
        pale_only = pale_fill() & ~ink
        return ink | open_square(pale_only)

    pieces: list[tuple[Box, float | None]] = []  # (box, confirming confidence | None)
    if regions is None:
        regions = leaves(arr, ink, min_side, classic, share, gutters)
    for region in regions:
        parts: list[Box] = []
        small: list[Box] = []
        # a part's confirming box (IoU >= 0.5) lies at least half inside the region: without two
        # such boxes nothing can be confirmed, so the costly fine cuts are skipped (same result)
        inside = sum(inter(d, region) >= 0.5 * area(d) for d, _ in dets)
        if inside >= 2 and big(region):
            lines = lines or LineSums(arr, ink)
            gap = min_gap_for(ink.shape, fine)
            cut = xy_cut(ink, region, gap, 0, lines, limit, fine, gutters)
            parts = [b for b in cut if big(b)]
            small = [b for b in cut if not big(b)]

        def whole(boxes: list[Box], region: Box = region) -> float:
            """The most confident box matching ``region`` as one panel (IoU >= 0.5); with
            ``distinct``, one matching some part of ``boxes`` at least as well does not count."""
            return max(
                (
                    s
                    for d, s in dets
                    if iou(d, region) >= 0.5
                    and not (params.distinct and any(iou(d, b) >= iou(d, region) for b in boxes))
                ),
                default=0.0,
            )

        def one_panel(
            boxes: list[Box], scores: list[float], region: Box = region, small: list[Box] = small
        ) -> bool:
            if params.letter_conf and min(scores) >= params.letter_conf:
                return False  # the detector is sure of every part: the guard gives way
            return bool(params.letters) and one_lettered_panel(
                region, boxes, small, regions, ink.shape, limit, params
            )

        def detector_split(box: Box) -> list[tuple[Box, float | None]]:
            """``box`` cut at its detector boxes (section 14), or [] when it does not split or
            the cut fails the whole-region or the letter check."""
            cuts = _detector_split(arr, ink, box, dets, params)
            cut_boxes = [b for b, _ in cuts]
            scores = [s or 0.0 for _, s in cuts]
            if cuts and whole(cut_boxes, box) <= min(scores):
                if not one_panel(cut_boxes, scores, box):
                    return cuts
            return []

        if len(parts) >= 2:
            best = [max((s for d, s in dets if iou(d, b) >= 0.5), default=0.0) for b in parts]
            confirmed = [s for s in best if s > 0]
            if (
                len(confirmed) >= 2
                and len(confirmed) >= params.support * len(parts)
                and whole(parts) <= min(confirmed)
                and not one_panel(parts, best)
            ):
                for b, s in zip(parts, best):  # with nested: unconfirmed parts cut further
                    sub = detector_split(b) if params.nested and s == 0 else []
                    pieces += sub or [(b, s if s > 0 else ink_share(b))]
                continue
        # the detector's own splits: where the fine cut found nothing (fallback 1), or wherever the
        # region would otherwise stay whole (fallback 2)
        if (
            inside >= 2
            and big(region)
            and (params.fallback >= 2 or (params.fallback and len(parts) < 2))
        ):
            cuts = detector_split(region)
            if cuts:
                pieces += cuts
                continue
        pieces.append((region, None))
    if params.merge:
        out = _arbitrate(
            pieces,
            dets,
            dataclasses.replace(params, small=0.0),
            arr,
            ink,
            min_side,
            limit,
            lane if params.tiny and params.tiny_upright else None,
        )
    else:
        out = [(b, ink_share(b) if s is None else s) for b, s in pieces if s is not None or big(b)]
    if not params.hairline:
        return out
    # a JPEG figure's hairlines between pictures blurred pale along their length (ridge)
    hair = (
        dataclasses.replace(gutters, ridge=params.ridge, reach=round(params.ridge_reach))
        if gutters is not None and params.ridge
        else None
    )
    cut_ink = glass() if params.hairline_pale else ink
    out = hairline_cuts(arr, cut_ink, out, limit, params, hair)
    if params.valley:  # gutters blended by a shrink from print size (section 80)
        if bg is None:
            bg = background_colour(arr, classic)
        valleys = Valleys.of(arr, bg, params.valley, hair)
        out = hairline_cuts(arr, cut_ink, out, limit, params, valleys)
    return out


def open_square(mask: np.ndarray) -> np.ndarray:
    """Binary opening of (H, W) bool ``mask`` by a 3x3 square, outside the image counted empty:
    what ``scipy.ndimage.binary_opening(mask, np.ones((3, 3)))`` gives, from shifted ANDs and ORs
    (a 3x3 square is a row of 3 then a column of 3)."""
    h, w = mask.shape
    pad = np.zeros((h + 2, w + 2), dtype=bool)
    pad[1:-1, 1:-1] = mask
    rows = pad[:, :-2] & pad[:, 1:-1] & pad[:, 2:]  # (H + 2, W)
    pad[1:-1, 1:-1] = rows[:-2] & rows[1:-1] & rows[2:]  # eroded, back in the empty frame
    rows = pad[:, :-2] | pad[:, 1:-1] | pad[:, 2:]
    return rows[:-2] | rows[1:-1] | rows[2:]


def hairline_cuts(
    arr: np.ndarray,
    ink: np.ndarray,
    boxes: Sequence[Scored],
    limit: int,
    params: HybridParams,
    gutters: Gutters | Valleys | None = None,
) -> list[Scored]:
    """``boxes`` with each one replaced by its parts where blank rows or columns one pixel wide or
    more part it into pictures of similar size (``params.hairline``, section 60 of
    docs/experiments/panel-detector.md): at least two parts with both sides at least ``limit`` px,
    each passing the picture test (see :func:`_picture`), the pieces left over holding at most
    ``hairline_rest`` of the box, and the largest part under ``hairline`` of the parts' summed
    area. A large picture with small close-ups or maps beside it stays one panel; so does a chart
    (its plot and labels are mostly background), unless ``hairline_plots`` lets a chart's plot
    stand among pictures (see _hairline_parts). The parts keep the box's score. ``gutters`` (a
    JPEG figure, with ``params.ridge``): how the cut reads blank lines there (classic.Gutters);
    with ``valley`` (classic.Valleys), no part may be a block of flat colour (see
    :func:`flat_colour`)."""
    out: list[Scored] = []
    for box, score in boxes:
        b = (int(round(box[0])), int(round(box[1])), int(round(box[2])), int(round(box[3])))
        if max(b[2] - b[0], b[3] - b[1]) < 2 * limit + 1:  # no room for two parts and a gutter
            out.append((box, score))
            continue
        cut = xy_cut(ink, b, 1, 0, None, limit, _NO_SEAMS, gutters)
        parts = [q for q in cut if q[2] - q[0] >= limit and q[3] - q[1] >= limit]
        if len(parts) >= 2:
            areas = [area(q) for q in parts]
            rest = sum(area(q) for q in cut if q not in parts) / max(1, area(b))
            if (
                max(areas) < params.hairline * sum(areas)
                and rest <= params.hairline_rest
                and _hairline_parts(arr, ink, parts, params)
                and not (
                    isinstance(gutters, Valleys)
                    and any(flat_colour(arr, gutters.level, q) for q in parts)
                )
            ):
                out += [(q, score) for q in parts]
                continue
        out.append((box, score))
    return out


def _hairline_parts(
    arr: np.ndarray, ink: np.ndarray, parts: list[Box], params: HybridParams
) -> bool:
    """Whether the hairline cut's ``parts`` may stand apart: all pictures (see :func:`_picture`),
    or, with ``hairline_plots``, pictures and chart plots, at least half of them pictures (section
    79). A plot has its axes at the bottom left (see :func:`axes_corner`) and under ``tiny_ink``
    of it is ink: a block of flat colour has full rows and columns too, but it is filled."""
    pictures = [_picture(arr, ink, q, params) for q in parts]
    if all(pictures):
        return True
    if not params.hairline_plots or 2 * sum(pictures) < len(parts):
        return False
    return all(
        p
        or (
            float(ink[q[1] : q[3], q[0] : q[2]].mean()) < params.tiny_ink
            and axes_corner(arr, ink, q, params)
        )
        for p, q in zip(pictures, parts)
    )


#: a part of a valley cut is a block of flat colour when at least this share of its ink (pixels
#: more than 30 levels off the background) falls in its most common colour bin (section 80)
FLAT_SHARE = 0.2
_FLAT_BIN = 16  # grey levels per channel in a colour bin; two grids, offset by half a bin


def flat_colour(arr: np.ndarray, level: np.ndarray, box: Box) -> bool:
    """Whether ``box`` of ``arr`` is a block of flat colour, such as a chart's bar: at least
    :data:`FLAT_SHARE` of its ink in one colour bin (the better of two grids of bins
    :data:`_FLAT_BIN` levels wide per channel, offset by half a bin, so a colour on a bin edge
    still counts). A picture's ink spreads over many colours. ``level``: classic.off_level of
    ``arr``; a box with under 10 ink pixels counts as flat (nothing to stand on)."""
    x0, y0, x1, y1 = box
    ink = level[y0:y1, x0:x1] > 30  # (h, w)
    count = int(ink.sum())
    if count < 10:
        return True
    pixels = arr[y0:y1, x0:x1][ink].astype(np.int32)  # (N, C)
    best = 0
    for offset in (0, _FLAT_BIN // 2):
        bins = (pixels + offset) // _FLAT_BIN  # (N, C), each channel in 0..16
        codes = bins[:, 0]
        for c in range(1, bins.shape[1]):
            codes = codes * 17 + bins[:, c]
        best = max(best, int(np.bincount(codes).max()))
    return best >= FLAT_SHARE * count


_ALIGN = 2  # px: two boxes line up when their facing sides' ends lie this close
_CONFIRM = 0.5  # IoU: a detector box confirms a box this well


def join_pale(
    before: Sequence[Scored],
    after: Sequence[Scored],
    pale_ink: np.ndarray,
    dets: Sequence[Box],
    params: HybridParams,
) -> list[Scored]:
    """Boxes that are pieces of one picture joined back (``params.pale_join``, section 63 of
    docs/experiments/panel-detector.md). A micrograph with a band of bare glass across it is cut at
    the band, because the ink mask sees glass as background. ``after`` are the boxes grown over
    their pale edges, ``before`` the same boxes before growing (same order). Two boxes are joined
    when, grown, they line up (both ends of their facing sides within 2 px) and do not overlap,
    stood at least ``pale_join`` px apart before growing, no other box lies in the gap, and every
    line across the gap holds at least ``pale_share`` of ``pale_ink`` (a gutter has a line of
    bare background). Two touching pictures whose glass meets are told apart by the detector: a
    pair is left alone when a detector box in ``dets`` matches each of them at IoU 0.5 or more.
    The joined box keeps the higher score."""
    boxes = [[int(v) for v in b] for b, _ in after]
    olds = [[int(v) for v in b] for b, _ in before]
    scores = [s for _, s in after]

    def confirmed(b: list[int]) -> bool:
        return any(iou(tuple(b), d) >= _CONFIRM for d in dets)

    def joinable(i: int, j: int) -> bool:
        a, b, oa, ob = boxes[i], boxes[j], olds[i], olds[j]
        for lo, hi in ((1, 3), (0, 2)):  # j below i, then j right of i
            across = (0, 2) if lo == 1 else (1, 3)  # the sides that must line up
            if any(abs(a[k] - b[k]) > _ALIGN for k in across) or b[lo] < a[hi] - 1:
                continue
            if ob[lo] - oa[hi] < params.pale_join:
                continue
            if lo == 1:
                gap = (min(a[0], b[0]), oa[hi], max(a[2], b[2]), ob[lo])
            else:
                gap = (oa[hi], min(a[1], b[1]), ob[lo], max(a[3], b[3]))
            if any(
                inter(gap, (o[0], o[1], o[2], o[3])) > 0
                for k, o in enumerate(boxes)
                if k not in (i, j)
            ):
                continue
            lines = pale_ink[gap[1] : gap[3], gap[0] : gap[2]].mean(axis=1 if lo == 1 else 0)
            if lines.size and float(lines.min()) >= params.pale_share:
                return not (confirmed(a) and confirmed(b))
        return False

    merged = True
    while merged:
        merged = False
        for i in range(len(boxes)):
            j = next((j for j in range(len(boxes)) if j != i and joinable(i, j)), None)
            if j is None:
                continue
            a, b, oa, ob = boxes[i], boxes[j], olds[i], olds[j]
            boxes[i] = [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]
            olds[i] = [min(oa[0], ob[0]), min(oa[1], ob[1]), max(oa[2], ob[2]), max(oa[3], ob[3])]
            scores[i] = max(scores[i], scores[j])
            del boxes[j], olds[j], scores[j]
            merged = True
            break
    return [((b[0], b[1], b[2], b[3]), s) for b, s in zip(boxes, scores)]
