"""An offline Open-i: a real HTTP server on 127.0.0.1 that replays records and images from a folder.

The folder holds ``records.json`` (a JSON list of records in Open-i's nested shape, exactly as in
``../shared/data/openi/openi_cxr_response_verbatim.json``) and the image files at the paths the
records' ``imgLarge``/``imgThumb``... name, relative to the folder (``/imgs/512/x.jpg`` ->
``FOLDER/imgs/512/x.jpg``). ``GET /api/search`` answers like Open-i: ``{min, max, count, total,
approximage, list}``, ``{"total": 0}`` without hits, ``{"Query-Error": "Invalid request type."}`` for
an unknown ``it``. It filters by the words of ``query`` (``a OR b``; words of one term must all match
title, caption, abstract or MeSH), ``it`` (the record's ``image.modalityMajor``), ``coll`` and ``lic``.

Faults for tests and benchmarks (:class:`Faults`): latency per request, a capped page size (the
server serves fewer records than asked), and for each path its first N requests answered with 429 +
``Retry-After``, 500, or a truncated body (a ``Content-Length`` larger than what is sent), plus the
same faults at random with a seeded generator; search pages after the first can also come back as
a complete answer whose JSON is cut short (``first_bad_json``). Every request is logged (time, path,
status) so tests can measure request spacing at the server.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from glomssl.config import opt
from glomssl.errors import GlomsslError
from glomssl.mining.openi import COLLECTIONS, IMAGE_TYPES

CONTENT_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
}


@dataclass
class Faults:
    """Fault injection. ``*_first``: the first N requests of EACH path get that fault (in the order
    429, 500, truncated); ``p_*``: each request gets it with that probability (seeded)."""

    latency_s: float = 0.0
    max_page: int | None = None
    first_429: int = 0
    first_500: int = 0
    first_truncated: int = 0
    first_bad_json: int = 0  # search pages after the first: a 200 whose JSON body is cut short
    retry_after_s: int = 1
    p_429: float = 0.0
    p_500: float = 0.0
    p_truncated: float = 0.0
    seed: int = 0
    only_prefix: str = ""  # e.g. "/imgs/": inject faults only into requests for these paths


@dataclass
class LoggedRequest:
    t: float
    path: str
    status: int


def make_record(
    uid: str,
    image_id: str,
    img_large: str,
    caption: str = "",
    *,
    title: str = "",
    abstract: str = "",
    license: str = "by",
    modality: str = "mc",
    doc_source: str = "PMC",
    journal: str = "",
    year: str = "2019",
    authors: str = "",
    mesh_major: list[str] | None = None,
) -> dict[str, Any]:
    """An Open-i-shaped record (field names and nesting as in Open-i's verbatim answer)."""
    stem = img_large.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    base = img_large.split("/imgs/512/", 1)[-1] if "/imgs/512/" in img_large else img_large
    lic_urls = {
        "by": "http://creativecommons.org/licenses/by/4.0/",
        "bync": "http://creativecommons.org/licenses/by-nc/4.0/",
        "byncnd": "http://creativecommons.org/licenses/by-nc-nd/4.0/",
        "byncsa": "http://creativecommons.org/licenses/by-nc-sa/4.0/",
    }
    return {
        "uid": uid,
        "pmcid": uid.removeprefix("PMC"),
        "docSource": doc_source,
        "articleType": "ra",
        "title": title,
        "fulltext_html_url": "",
        "journal_title": journal,
        "journal_abbr": journal,
        "journal_date": {"day": "01", "month": "01", "year": year},
        "authors": authors,
        "affiliate": "",
        "MeSH": {"minor": [], "major": list(mesh_major or [])},
        "ccLicense": license,
        "licenseURL": lic_urls.get(license, ""),
        "licenseType": "open-access",
        "abstract": abstract,
        "image": {"id": image_id, "caption": caption, "modalityMajor": modality, "mention": ""},
        "imgThumb": f"/imgs/100/{base}",
        "imgLarge": img_large,
        "imgThumbLarge": f"/imgs/137/{base}",
        "imgGrid150": f"/imgs/150/{base}",
        "similarInCollection": f"retrieve.php?simCollection={stem}&query=&req=3",
        "getArticleFigures": f"retrieve.php?uid={uid}&req=5",
        "detailedQueryURL": f"retrieve.php?img={stem}&query=&coll=pmc&req=4",
        "similarInResults": f"retrieve.php?simResults={stem}&query=&coll=pmc&req=2",
    }


def load_records(folder: Path) -> list[dict[str, Any]]:
    path = folder / "records.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise GlomsslError(f"{path} does not exist; a replay folder needs records.json") from exc
    except (OSError, ValueError) as exc:  # ValueError: not JSON, or not UTF-8
        raise GlomsslError(f"{path} is not readable JSON ({exc}); fix the replay folder") from exc
    records = data.get("list", []) if isinstance(data, dict) else data
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise GlomsslError(f"{path} must hold a JSON list of Open-i records")
    return records


def _haystack(rec: dict[str, Any]) -> str:
    image = rec.get("image") or {}
    mesh = rec.get("MeSH") or {}
    parts = [rec.get("title"), rec.get("abstract"), image.get("caption"), image.get("mention")]
    parts += list(mesh.get("major", [])) + list(mesh.get("minor", []))
    return " ".join(str(p) for p in parts if p).lower()


def matches(rec: dict[str, Any], query: str, it: str, coll: str, lic: str) -> bool:
    """Open-i-like filtering: ``a b OR c`` means (a AND b) OR c, case-insensitive substrings."""
    terms = [t.lower().split() for t in query.replace(" or ", " OR ").split(" OR ")]
    text = _haystack(rec)
    if not any(words and all(w in text for w in words) for words in terms):
        return False
    modality = str((rec.get("image") or {}).get("modalityMajor", ""))
    if it == "xg" and modality == "g":
        return False
    if it and it not in ("xg", "xm") and modality != it:
        return False
    if coll and str(rec.get("docSource", "")).lower() != coll:
        return False
    return not (lic and str(rec.get("ccLicense", "")) not in lic.split(","))


class ReplayServer:
    """Serve a replay folder on 127.0.0.1 in a background thread; ``with ReplayServer(d) as s:``."""

    def __init__(
        self,
        folder: str | Path,
        port: int = 0,
        faults: Faults | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.folder = Path(folder).resolve()
        self.records = load_records(self.folder)
        self.faults = faults or Faults()
        self.log: list[LoggedRequest] = []
        self._seen: Counter[str] = Counter()
        self._bad: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._rng = random.Random(self.faults.seed)
        handler = type("Handler", (_Handler,), {"replay": self})
        try:
            self.httpd = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise GlomsslError(
                f"cannot listen on {host}:{port} ({exc.strerror}); try another --port"
            ) from exc
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> ReplayServer:
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ReplayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def requests_to(self, prefix: str) -> list[LoggedRequest]:
        with self._lock:
            return [r for r in self.log if r.path.startswith(prefix)]

    # -- decisions (called from handler threads) ----------------------------------------------
    def fault_for(self, path: str) -> str | None:
        f = self.faults
        if not path.startswith(f.only_prefix):
            return None
        with self._lock:
            self._seen[path] += 1
            n = self._seen[path]
            r = self._rng.random()
        if n <= f.first_429:
            return "429"
        if n <= f.first_429 + f.first_500:
            return "500"
        if n <= f.first_429 + f.first_500 + f.first_truncated:
            return "truncated"
        for kind, p in (("429", f.p_429), ("500", f.p_500), ("truncated", f.p_truncated)):
            if r < p:
                return kind
            r -= p
        return None

    def bad_json(self, path: str) -> bool:
        """True for the first ``first_bad_json`` requests of a search page after the first."""
        with self._lock:
            self._bad[path] += 1
            return self._bad[path] <= self.faults.first_bad_json

    def search(self, params: dict[str, str]) -> dict[str, Any]:
        it, coll, lic = params.get("it", ""), params.get("coll", ""), params.get("lic", "")
        if it and it not in IMAGE_TYPES:
            return {"Query-Error": "Invalid request type."}
        if coll and coll not in COLLECTIONS:
            return {"Query-Error": "Invalid collection."}
        hits = [r for r in self.records if matches(r, params.get("query", ""), it, coll, lic)]
        if not hits:
            return {"total": 0}
        try:
            m = max(1, int(params.get("m", "1")))
            n = max(m, int(params.get("n", str(m + 9))))
        except ValueError:
            return {"Query-Error": "Invalid range."}
        size = n - m + 1
        if self.faults.max_page:
            size = min(size, self.faults.max_page)
        page = hits[m - 1 : m - 1 + size]
        return {
            "min": m,
            "max": m + len(page) - 1,
            "count": len(page),
            "total": len(hits),
            "approximage": "false",
            "list": page,
        }

    def image_file(self, path: str) -> Path | None:
        """The file for a request path, only if it lies inside the folder (no traversal)."""
        cand = (self.folder / unquote(path).lstrip("/")).resolve()
        if (
            not cand.is_relative_to(self.folder)
            or not cand.is_file()
            or cand.name == "records.json"
        ):
            return None
        return cand


class _Handler(BaseHTTPRequestHandler):
    replay: ReplayServer
    _arrived: float = 0.0
    protocol_version = "HTTP/1.1"
    server_version = "glomssl-openi-replay/1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr
        return

    def _send(self, status: int, body: bytes, ctype: str, truncated: bool = False) -> None:
        with self.replay._lock:  # logged before answering, stamped with the arrival time
            self.replay.log.append(LoggedRequest(self._arrived, self.path, status))
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if status == 429:
            self.send_header("Retry-After", str(self.replay.faults.retry_after_s))
        if truncated:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if truncated else body)

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        self._arrived = time.monotonic()
        rp = self.replay
        if rp.faults.latency_s > 0:
            time.sleep(rp.faults.latency_s)
        parts = urlsplit(self.path)
        fault = rp.fault_for(parts.path + ("?" + parts.query if parts.query else ""))
        if fault == "429":
            return self._send(429, b'{"error": "Too Many Requests"}', "application/json")
        if fault == "500":
            return self._send(500, b"Internal Server Error", "text/plain")
        if parts.path == "/api/search":
            params = {k: v[0] for k, v in parse_qs(parts.query).items()}
            body = json.dumps(rp.search(params)).encode()
            if params.get("m", "1") != "1" and rp.bad_json(self.path):
                body = body[: len(body) // 2]  # complete HTTP answer, cut JSON
            return self._send(200, body, "application/json", truncated=fault == "truncated")
        file = rp.image_file(parts.path)
        if file is None:
            return self._send(404, b"Not Found", "text/plain")
        ctype = CONTENT_TYPES.get(file.suffix.lower(), "application/octet-stream")
        self._send(200, file.read_bytes(), ctype, truncated=fault == "truncated")


@dataclass
class ReplayConfig:
    """Options of ``glomssl replay``."""

    folder: str = ""
    port: int = opt(8765, ge=0, le=65535)
    latency: float = opt(0.0, ge=0)
    max_page: int | None = opt(None, ge=1)
    p429: float = opt(0.0, ge=0, le=1)
    p500: float = opt(0.0, ge=0, le=1)
    ptruncated: float = opt(0.0, ge=0, le=1)
    retry_after: int = opt(1, ge=0)
    as_json: bool = False  # print the address as one JSON object instead of a sentence

    def validate(self) -> None:
        if self.p429 + self.p500 + self.ptruncated > 1:
            raise GlomsslError("--p429 + --p500 + --ptruncated must sum to at most 1")
        if not Path(self.folder).is_dir():
            raise GlomsslError(f"--data {self.folder} is not a folder; pass a replay data folder")


def run_replay(cfg: ReplayConfig) -> None:
    """``glomssl replay``: serve ``cfg.folder`` with the configured faults until Ctrl-C."""
    faults = Faults(
        latency_s=cfg.latency,
        max_page=cfg.max_page,
        p_429=cfg.p429,
        p_500=cfg.p500,
        p_truncated=cfg.ptruncated,
        retry_after_s=cfg.retry_after,
    )
    serve(cfg.folder, cfg.port, faults, as_json=cfg.as_json)


def serve(folder: str | Path, port: int, faults: Faults, as_json: bool = False) -> None:
    """Run a replay server in the foreground until Ctrl-C (``glomssl replay``)."""
    server = ReplayServer(folder, port=port, faults=faults)
    if as_json:
        info = {"folder": str(server.folder), "records": len(server.records), "url": server.url}
        print(json.dumps(info), flush=True)
    else:
        print(
            f"Open-i replay of {server.folder} ({len(server.records)} records) at {server.url} "
            f"(try: glomssl mine --endpoint {server.url} --query kidney --out corpus/ --rate 0)",
            flush=True,
        )
    try:
        server.httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()


def write_replay_folder(
    folder: str | Path, records: list[dict[str, Any]], images: dict[str, bytes]
) -> Path:
    """Write ``records.json`` and image files (keyed by their site path, e.g. ``/imgs/512/a.png``)."""
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    for site_path, data in images.items():
        target = (root / site_path.lstrip("/")).resolve()
        if not target.is_relative_to(root.resolve()):
            raise GlomsslError(f"image path {site_path!r} would leave the replay folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    (root / "records.json").write_text(json.dumps(records, indent=1), encoding="utf-8")
    return root


def make_synthetic_replay(
    folder: str | Path, n_figures: int, per_article: int = 3, size: int = 64, seed: int = 0
) -> Path:
    """A replay folder of ``n_figures`` small random-texture PNG figures, ``per_article`` figures
    sharing each uid, all matching the query "glomerulus" (for tests and benchmarks)."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    records, images = [], {}
    for i in range(n_figures):
        uid, fid = f"PMC{1000 + i // per_article}", f"F{i % per_article + 1}"
        path = f"/imgs/512/{i % 7}/{i}/{uid}_{fid}.png"
        pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="PNG")
        images[path] = buf.getvalue()
        caption = f"<p>Glomerulus, <i>PAS</i> stain &gt; figure {i}</p>"
        records.append(make_record(uid, fid, path, caption, title=f"Kidney article {uid}"))
    return write_replay_folder(folder, records, images)
