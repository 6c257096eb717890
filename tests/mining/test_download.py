"""Downloads: rate limit measured at the server, retries, Retry-After, checks, file naming."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
from PIL import Image

from glomssl.mining.download import (
    HttpClient,
    RateLimiter,
    RetryPolicy,
    check_image,
    download_many,
    download_one,
    figure_filename,
    parse_retry_after,
)
from glomssl.mining.replay import Faults, ReplayServer, make_record, write_replay_folder

FAST = RetryPolicy(max_retries=3, base_s=0.01, cap_s=0.05)


def _png(w: int = 16, h: int = 12, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (w, h), 128 if mode != "RGB" else (200, 30, 90)).save(buf, format="PNG")
    return buf.getvalue()


def _folder(tmp_path: Path, images: dict[str, bytes]) -> Path:
    recs = [make_record(f"PMC{i}", "F1", p, "glomerulus") for i, p in enumerate(images)]
    return write_replay_folder(tmp_path / "rp", recs, images)


def test_check_image_accepts_real_image_and_rejects_others() -> None:
    info = check_image(_png(30, 20), max_pixels=10_000)
    assert (info.width, info.height, info.ext) == (30, 20, ".png")
    with pytest.raises(ValueError, match="not an image"):
        check_image(b"<html>Not found</html>", max_pixels=10_000)
    with pytest.raises(ValueError, match="not an image"):
        check_image(_png(30, 20)[:60], max_pixels=10_000)  # truncated PNG does not decode
    with pytest.raises(ValueError, match="too many pixels"):
        check_image(_png(300, 200), max_pixels=10_000)


def test_decompression_bomb_is_refused_before_decoding() -> None:
    """A 10000x10000 1-bit PNG is ~15 kB on the wire but 100 Mpixel once decoded."""
    buf = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(buf, format="PNG", optimize=True)
    bomb = buf.getvalue()
    assert len(bomb) < 100_000
    with pytest.raises(ValueError, match="too many pixels"):
        check_image(bomb, max_pixels=40_000_000)


def test_figure_filename_comes_from_the_hash_only() -> None:
    sha = "a" * 64
    assert figure_filename(sha, ".png") == sha + ".png"
    for bad_sha in ("../../etc/passwd", "A" * 64, "a" * 63):
        with pytest.raises(ValueError):
            figure_filename(bad_sha, ".png")
    with pytest.raises(ValueError):
        figure_filename(sha, "/../x")


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Thu, 01 Jan 2015 00:00:10 GMT", now=1420070400.0) == 10.0


def test_backoff_is_exponential_with_jitter() -> None:
    pol, rng = RetryPolicy(base_s=1.0, cap_s=8.0), random.Random(0)
    draws = [[pol.backoff(k, rng) for _ in range(200)] for k in range(5)]
    for k, d in enumerate(draws):
        assert 0.0 <= min(d) and max(d) <= min(8.0, 2.0**k)
        assert len(set(d)) > 150  # jittered, not a fixed delay
    assert max(draws[3]) > 2.0  # the ceiling grows with the attempt number


def test_rate_limit_measured_at_the_server(tmp_path: Path) -> None:
    """8 workers, --rate 20: the server sees requests spaced ~1/20 s apart (arrival times)."""
    n = 16
    images = {f"/imgs/512/x/{i}.png": _png(10 + i, 10) for i in range(n)}
    folder = _folder(tmp_path, images)
    with ReplayServer(folder) as server:
        client = HttpClient("test", rate=20.0, retry=FAST)
        jobs = [((f"PMC{i}", "F1"), server.url + p) for i, p in enumerate(images)]
        results = list(download_many(client, jobs, tmp_path / "out", 8, 1 << 20, 10**6))
        times = sorted(r.t for r in server.requests_to("/imgs/"))
    assert all(r.status == "done" for r in results) and len(times) == n
    # A rate limit bounds every window of k consecutive requests to >= (k-1)/rate seconds; allow
    # 40 ms of thread-scheduling jitter (without the limiter, 8 workers arrive all at once).
    for i in range(n - 4):
        assert times[i + 4] - times[i] >= 4 * 0.05 - 0.04, (i, times)
    assert times[-1] - times[0] >= (n - 1) * 0.05 * 0.9


def test_rate_zero_means_no_cap() -> None:
    assert RateLimiter(0).interval == 0.0 and RateLimiter(4.0).interval == 0.25


@pytest.mark.parametrize(
    "faults",
    [Faults(first_429=2, retry_after_s=1), Faults(first_500=2), Faults(first_truncated=2)],
    ids=["429", "500", "truncated"],
)
def test_transient_faults_are_retried(tmp_path: Path, faults: Faults) -> None:
    images = {"/imgs/512/a.png": _png()}
    folder = _folder(tmp_path, images)
    with ReplayServer(folder, faults=faults) as server:
        client = HttpClient("test", rate=0, retry=FAST)
        res = download_one(
            client, ("PMC0", "F1"), server.url + "/imgs/512/a.png", tmp_path / "out", 1 << 20, 10**6
        )
        log = server.requests_to("/imgs/")
    assert res.status == "done", res.reason
    assert [a.outcome for a in res.attempts] == ["retry", "retry", "ok"]
    assert len(log) == 3
    if faults.first_429:
        # Retry-After: 1 wins over the ~10 ms backoff
        assert log[1].t - log[0].t >= 0.9 and log[2].t - log[1].t >= 0.9


def test_permanent_failures_are_not_retried(tmp_path: Path) -> None:
    images = {
        "/imgs/512/page.png": b"<html>an error page</html>",
        "/imgs/512/big.png": _png(64, 64),
    }
    folder = _folder(tmp_path, images)
    with ReplayServer(folder) as server:
        client = HttpClient("test", rate=0, retry=FAST)
        out = tmp_path / "out"
        missing = download_one(
            client, ("A", "1"), server.url + "/imgs/512/nope.png", out, 1 << 20, 10**6
        )
        html = download_one(
            client, ("B", "1"), server.url + "/imgs/512/page.png", out, 1 << 20, 10**6
        )
        big = download_one(client, ("C", "1"), server.url + "/imgs/512/big.png", out, 100, 10**6)
    assert (missing.status, missing.reason, len(missing.attempts)) == (
        "failed_permanent",
        "HTTP 404",
        1,
    )
    assert html.status == "failed_permanent" and "not an image" in html.reason
    assert big.status == "failed_permanent" and "too large" in big.reason
    assert not out.exists() or list(out.iterdir()) == []


def test_exhausted_retries_are_transient(tmp_path: Path) -> None:
    folder = _folder(tmp_path, {"/imgs/512/a.png": _png()})
    with ReplayServer(folder, faults=Faults(first_500=99)) as server:
        client = HttpClient("test", rate=0, retry=RetryPolicy(max_retries=2, base_s=0.01))
        res = download_one(
            client, ("PMC0", "F1"), server.url + "/imgs/512/a.png", tmp_path / "out", 1 << 20, 10**6
        )
    assert res.status == "failed_transient" and "HTTP 500" in res.reason
    assert len(res.attempts) == 3


def test_user_agent_is_sent(tmp_path: Path) -> None:
    seen: list[str] = []
    folder = _folder(tmp_path, {"/imgs/512/a.png": _png()})
    with ReplayServer(folder) as server:
        client = HttpClient("glomssl-test/1 (me@example.org)", rate=0)
        client._session().hooks["response"].append(
            lambda r, *a, **k: seen.append(r.request.headers["User-Agent"])
        )
        client.get(server.url + "/imgs/512/a.png")
    assert seen == ["glomssl-test/1 (me@example.org)"]
