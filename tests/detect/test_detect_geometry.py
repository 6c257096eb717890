"""Circle view, circle IoU against a pixel count, circle NMS, matching and AP."""

from __future__ import annotations

import math

import numpy as np
import pytest

from glomssl.detect.geometry import (
    average_precision,
    box_iou,
    boxes_to_circles,
    circle_iou,
    circle_nms,
    detection_metrics,
    match_detections,
)


def _raster_iou(a: tuple[float, float, float], b: tuple[float, float, float]) -> float:
    yy, xx = np.mgrid[0:400, 0:400] + 0.5
    ma = (xx - a[0]) ** 2 + (yy - a[1]) ** 2 <= a[2] ** 2
    mb = (xx - b[0]) ** 2 + (yy - b[1]) ** 2 <= b[2] ** 2
    return float((ma & mb).sum() / (ma | mb).sum())


def test_circle_view_is_centre_and_half_the_longer_side() -> None:
    c = boxes_to_circles(np.array([[10, 20, 50, 100]]))
    assert c.tolist() == [[30.0, 60.0, 40.0]]


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ((200, 200, 80), (200, 200, 80)),  # identical
        ((200, 200, 80), (260, 200, 80)),  # lens
        ((200, 200, 80), (210, 205, 40)),  # one inside the other
        ((150, 200, 60), (230, 220, 90)),  # different radii, lens
        ((100, 100, 40), (300, 300, 40)),  # disjoint
    ],
)
def test_circle_iou_matches_a_pixel_count(a: tuple, b: tuple) -> None:
    got = float(circle_iou(np.array([a]), np.array([b]))[0, 0])
    assert got == pytest.approx(_raster_iou(a, b), abs=0.01)
    assert got == pytest.approx(float(circle_iou(np.array([b]), np.array([a]))[0, 0]))


def test_contained_circle_iou_is_the_area_ratio() -> None:
    got = circle_iou(np.array([[0, 0, 10.0]]), np.array([[1, 1, 5.0]]))[0, 0]
    assert got == pytest.approx(0.25)


def test_circle_nms_keeps_the_best_and_prefers_whole_views() -> None:
    circles = np.array([[100, 100, 50], [110, 100, 50], [400, 400, 50]], dtype=float)
    scores = np.array([0.6, 0.9, 0.5])
    assert circle_nms(circles, scores, 0.35).tolist() == [1, 2]
    # the first is seen whole, the second is cut by a tile edge: the whole one wins despite its score
    keep = circle_nms(circles, scores, 0.35, priority=np.array([1.0, 0.0, 1.0]))
    assert keep.tolist() == [0, 2]
    assert circle_nms(np.zeros((0, 3)), np.zeros(0)).tolist() == []


def test_box_iou_and_greedy_matching() -> None:
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], dtype=float)
    pred = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 31], [50, 50, 60, 60]], float)
    assert box_iou(pred[:1], gt[:1])[0, 0] == pytest.approx(1.0)
    tp = match_detections(pred, np.array([0.9, 0.95, 0.8, 0.7]), gt)
    # the higher-scored duplicate takes the first glomerulus; the other duplicate is a false positive
    assert tp.tolist() == [0, 1, 1, 0]


def test_average_precision_of_known_rankings() -> None:
    assert average_precision(np.array([1, 1, 0]), np.array([0.9, 0.8, 0.1]), 2) == pytest.approx(1)
    # TP, FP, TP of 2 ground truths: precision 1 up to recall 0.5, then 2/3 up to recall 1
    ap = average_precision(np.array([1, 0, 1]), np.array([0.9, 0.8, 0.7]), 2)
    assert ap == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert average_precision(np.array([1]), np.array([0.9]), 4) == pytest.approx(0.25)
    assert math.isnan(average_precision(np.zeros(0), np.zeros(0), 0))


def test_detection_metrics_threshold_and_counts() -> None:
    gt = np.array([[0, 0, 10, 10]], float)
    images = [
        (np.array([[0, 0, 10, 10], [40, 40, 50, 50]], float), np.array([0.9, 0.3]), gt),
        (np.zeros((0, 4)), np.zeros(0), gt),
    ]
    m = detection_metrics(images, conf=0.5)
    assert (m["tp"], m["fp"], m["fn"], m["n_gt"]) == (1, 0, 1, 2)
    assert m["precision"] == 1.0 and m["recall"] == 0.5
    m2 = detection_metrics(images, conf=0.2)
    assert m2["fp"] == 1 and m2["precision"] == 0.5
    assert m["ap50"] == pytest.approx(0.5)
