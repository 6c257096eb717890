"""Polite, checked downloads: a global rate limiter, retries with backoff, and image validation.

Everything the miner fetches (search pages and figure images) goes through :class:`HttpClient`, so one
:class:`RateLimiter` caps the request rate over all worker threads together (the real Open-i server
is slow and shared; the polite default is one request per second). Transient failures (timeouts,
connection errors, truncated bodies, HTTP 5xx and 429) are retried with exponential backoff and full
jitter, and a server's ``Retry-After`` wins over our own backoff when it asks for longer.

A downloaded file counts only after :func:`check_image` accepted it: Pillow must decode the bytes (the
``Content-Type`` header is not trusted), and the pixel count is checked from the header *before*
decoding, so a decompression bomb is rejected without allocating its pixels. Files are named by the
miner from the sha256 of their bytes (:func:`figure_filename`), never from a server-supplied path, and
written atomically, so nothing outside ``--out/figures`` is ever written and no half-file is counted.
"""

from __future__ import annotations

import email.utils
import io
import random
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import requests

from glomssl.fsutil import atomic_write_bytes, sha256_bytes

#: Pillow format name -> file extension the miner gives the saved figure.
IMAGE_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "GIF": ".gif", "TIFF": ".tif", "WEBP": ".webp"}


class RateLimiter:
    """At most ``rate`` acquisitions per second over all threads (``rate <= 0``: no cap).

    Each caller reserves the next free time slot under a lock and then sleeps outside the lock until
    its slot, so slots are spaced ``1/rate`` seconds apart whatever the number of workers.
    """

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._clock = clock
        self._lock = threading.Lock()
        self._next = 0.0

    def acquire(self) -> None:
        if self.interval == 0.0:
            return
        with self._lock:
            now = self._clock()
            slot = max(now, self._next)
            self._next = slot + self.interval
        delay = slot - self._clock()
        if delay > 0:
            time.sleep(delay)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter: try ``k`` waits ``uniform(0, min(cap, base * 2**k))``."""

    max_retries: int = 4
    base_s: float = 0.5
    cap_s: float = 30.0
    max_retry_after_s: float = 120.0

    def backoff(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0.0, min(self.cap_s, self.base_s * (2**attempt)))


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass
class Attempt:
    """One HTTP attempt, as logged in the SQLite ``attempts`` table."""

    started_at: float
    status: int | None
    outcome: str  # "ok", "retry", "fail"
    detail: str = ""


@dataclass
class Fetched:
    """The final answer to a fetch: the body (or None), the last status and every attempt made."""

    status: int | None
    body: bytes | None
    error: str | None = None
    transient: bool = False
    attempts: list[Attempt] = field(default_factory=list)


class TooLarge(Exception):
    """The response body exceeded the size cap."""


class HttpClient:
    """GET with a shared rate limit, a size cap, retries, backoff and ``Retry-After``.

    One ``requests.Session`` per thread (sessions are not documented as thread-safe) keeps
    connections alive to the one host the miner talks to.
    """

    def __init__(
        self,
        user_agent: str,
        rate: float = 1.0,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
        seed: int | None = None,
    ) -> None:
        self.user_agent = user_agent
        self.limiter = RateLimiter(rate)
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self._local = threading.local()
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()

    def backoff_delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based) under the retry policy."""
        with self._rng_lock:
            return self.retry.backoff(attempt, self._rng)

    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = requests.Session()
            s.headers["User-Agent"] = self.user_agent
            self._local.session = s
        return s

    def _once(self, url: str, max_bytes: int) -> tuple[int, bytes, str | None]:
        """One request; returns (status, body, Retry-After). Raises requests errors or TooLarge."""
        self.limiter.acquire()
        with self._session().get(url, timeout=self.timeout_s, stream=True) as resp:
            declared = resp.headers.get("Content-Length")
            if resp.status_code == 200 and declared and declared.isdigit():
                if int(declared) > max_bytes:
                    raise TooLarge(f"Content-Length {declared} > cap {max_bytes}")
            buf = bytearray()
            for chunk in resp.iter_content(64 * 1024):
                buf += chunk
                if len(buf) > max_bytes:
                    raise TooLarge(f"body larger than cap {max_bytes} bytes")
            return resp.status_code, bytes(buf), resp.headers.get("Retry-After")

    def get(self, url: str, max_bytes: int = 20 << 20) -> Fetched:
        """Fetch ``url``; transient failures are retried up to ``retry.max_retries`` times."""
        attempts: list[Attempt] = []
        last_status: int | None = None
        last_error = ""
        for k in range(self.retry.max_retries + 1):
            t0 = time.time()
            wait_hint: float | None = None
            try:
                status, body, retry_after = self._once(url, max_bytes)
            except TooLarge as exc:
                attempts.append(Attempt(t0, 200, "fail", str(exc)))
                return Fetched(200, None, f"too large: {exc}", False, attempts)
            except (requests.Timeout, requests.ConnectionError) as exc:
                last_status, last_error = None, f"{type(exc).__name__}: {str(exc)[:160]}"
            except requests.exceptions.ChunkedEncodingError as exc:
                last_status, last_error = None, f"truncated body: {str(exc)[:160]}"
            except requests.RequestException as exc:
                attempts.append(Attempt(t0, None, "fail", str(exc)[:200]))
                return Fetched(None, None, f"request error: {exc}", False, attempts)
            else:
                last_status = status
                if status == 200:
                    attempts.append(Attempt(t0, status, "ok"))
                    return Fetched(status, body, None, False, attempts)
                if status != 429 and status < 500:
                    attempts.append(Attempt(t0, status, "fail", f"HTTP {status}"))
                    return Fetched(status, None, f"HTTP {status}", False, attempts)
                last_error = f"HTTP {status}"
                wait_hint = parse_retry_after(retry_after)
            attempts.append(Attempt(t0, last_status, "retry", last_error))
            if k == self.retry.max_retries:
                break
            delay = self.backoff_delay(k)
            if wait_hint is not None:
                delay = max(delay, min(wait_hint, self.retry.max_retry_after_s))
            time.sleep(delay)
        attempts[-1].outcome = "fail"
        return Fetched(last_status, None, f"gave up after retries: {last_error}", True, attempts)


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    fmt: str
    ext: str


def check_image(data: bytes, max_pixels: int) -> ImageInfo:
    """Decode ``data`` with Pillow and return its size; raise ValueError with a reason if it is not
    a real, fully decodable image of an allowed format within ``max_pixels``.

    The pixel cap is applied to the header's size before any decoding, so a small file that claims
    to be a huge image (a decompression bomb) is refused cheaply.
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():  # Pillow's own bomb warning: we apply our own cap below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
        with im:
            fmt = im.format or ""
            w, h = im.size
            if fmt not in IMAGE_FORMATS:
                raise ValueError(f"not an image (format {fmt or 'unknown'})")
            if w * h > max_pixels:
                raise ValueError(
                    f"too many pixels ({w}x{h} > cap {max_pixels}; decompression bomb?)"
                )
            im.load()
    except Image.DecompressionBombError as exc:
        raise ValueError(f"too many pixels (decompression bomb: {exc})") from exc
    except (OSError, SyntaxError) as exc:  # Pillow raises these on undecodable bytes
        raise ValueError(f"not an image ({str(exc)[:120]})") from exc
    return ImageInfo(int(w), int(h), fmt, IMAGE_FORMATS[fmt])


def figure_filename(sha256: str, ext: str) -> str:
    """The miner's own name for a figure file: its content hash, never a server-supplied path."""
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError("sha256 must be 64 lower-case hex digits")
    if ext not in IMAGE_FORMATS.values():
        raise ValueError(f"unexpected extension {ext!r}")
    return f"{sha256}{ext}"


@dataclass
class DownloadResult:
    """What one figure's download produced, handed back to the (single) thread that owns SQLite."""

    key: tuple[str, str]
    status: str  # "done", "failed_permanent", "failed_transient"
    reason: str = ""
    filename: str | None = None
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    retrieved_at: str | None = None
    attempts: list[Attempt] = field(default_factory=list)


def download_one(
    client: HttpClient,
    key: tuple[str, str],
    url: str,
    figures_dir: Path,
    max_bytes: int,
    max_pixels: int,
) -> DownloadResult:
    """Fetch, check and store one figure under ``figures_dir``; never raises for server faults."""
    got = client.get(url, max_bytes=max_bytes)
    if got.body is None:
        status = "failed_transient" if got.transient else "failed_permanent"
        return DownloadResult(key, status, got.error or "unknown error", attempts=got.attempts)
    try:
        info = check_image(got.body, max_pixels)
    except ValueError as exc:
        return DownloadResult(key, "failed_permanent", str(exc), attempts=got.attempts)
    digest = sha256_bytes(got.body)
    name = figure_filename(digest, info.ext)
    target = figures_dir / name
    if not (target.is_file() and target.stat().st_size == len(got.body)):
        atomic_write_bytes(target, got.body)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return DownloadResult(
        key, "done", "", name, digest, info.width, info.height, stamp, got.attempts
    )


def download_many(
    client: HttpClient,
    jobs: Iterable[tuple[tuple[str, str], str]],
    figures_dir: Path,
    workers: int,
    max_bytes: int,
    max_pixels: int,
) -> Iterator[DownloadResult]:
    """Download ``(key, url)`` jobs with a bounded pool of ``workers`` threads.

    At most ``2 * workers`` jobs are in flight, so a huge job list never piles up in memory, and
    results are yielded as they complete to the caller, which alone writes SQLite.
    """
    figures_dir.mkdir(parents=True, exist_ok=True)
    it = iter(jobs)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="glomssl-dl")
    pending: set[Future[DownloadResult]] = set()

    def refill() -> None:
        while len(pending) < 2 * workers:
            job = next(it, None)
            if job is None:
                return
            key, url = job
            pending.add(
                pool.submit(download_one, client, key, url, figures_dir, max_bytes, max_pixels)
            )

    try:
        refill()
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                pending.discard(fut)
                yield fut.result()
            refill()
    finally:  # on Ctrl-C or an error: drop queued jobs, let running ones end (state stays valid)
        pool.shutdown(wait=True, cancel_futures=True)
