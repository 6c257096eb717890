"""Client for the Open-i search API (National Library of Medicine, https://openi.nlm.nih.gov).

The API and its response shape are described in ``../shared/data/openi/API.md``: ``GET
/api/search?query=...&m=1&n=30&it=mc&coll=pmc&lic=by`` answers ``{min, max, count, total,
approximage, list}``, or ``{"total": 0}`` without hits, or ``{"Query-Error": ...}`` for a bad request.
Pagination follows the ``max`` the server *answers*, not the ``n`` we asked for, because a server may
serve fewer records than requested; the search ends at ``total`` or at the caller's limit.

A figure is identified by ``(uid, image.id)``: ``uid`` is the *article*, shared by all its figures.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from glomssl.errors import GlomsslError
from glomssl.mining.download import HttpClient

#: Open-i ``it`` codes (API.md): CT, graphics, MRI, microscopy, PET, photograph, ultrasound, X-ray,
#: exclude graphics, exclude multipanel.
IMAGE_TYPES = {
    "c": "CT",
    "g": "graphics",
    "m": "MRI",
    "mc": "microscopy",
    "p": "PET",
    "ph": "photograph",
    "u": "ultrasound",
    "x": "X-ray",
    "xg": "exclude graphics",
    "xm": "exclude multipanel",
}
COLLECTIONS = ("pmc", "cxr", "usc", "hmd", "mpx")
LICENSES = ("by", "bync", "byncnd", "byncsa")
MAX_PAGE = 100  # API.md: pages larger than about 100 are not reliable


def html_to_text(html: str | None) -> str:
    """Plain text of an HTML fragment (tags dropped, entities decoded, whitespace collapsed)."""
    if not html:
        return ""
    from bs4 import BeautifulSoup

    text = BeautifulSoup(html, "html.parser").get_text(" ")
    text = re.sub(r"\s+", " ", text).strip()
    return re.sub(r"\s+([.,;:!?)])", r"\1", text)


@dataclass(frozen=True)
class Figure:
    """One Open-i figure record, normalised. ``img_large`` is the server's path, used only for
    the download URL, never as a file name."""

    uid: str
    image_id: str
    img_large: str
    pmcid: str = ""
    caption: str = ""
    license: str = ""
    license_url: str = ""
    title: str = ""
    journal: str = ""
    year: str = ""
    authors: str = ""
    modality: str = ""
    doc_source: str = ""
    mesh_major: tuple[str, ...] = field(default_factory=tuple)

    @property
    def key(self) -> tuple[str, str]:
        return (self.uid, self.image_id)

    def metadata(self) -> dict[str, Any]:
        """Article metadata carried into the manifest rows."""
        return {
            "title": self.title,
            "journal": self.journal,
            "year": self.year,
            "authors": self.authors,
            "modality": self.modality,
            "doc_source": self.doc_source,
            "mesh_major": list(self.mesh_major),
            "license_url": self.license_url,
        }


def _s(v: Any) -> str:
    return "" if v is None else str(v)


def parse_record(rec: Any, where: str = "record") -> Figure:
    """Parse one record of ``list``; also accepts the flattened third-party shape (image_id ...)."""
    if not isinstance(rec, dict):
        raise GlomsslError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    image = rec.get("image")
    if isinstance(image, dict):
        image_id, caption, modality = (
            image.get("id"),
            image.get("caption"),
            image.get("modalityMajor"),
        )
    else:  # flattened records (image_id, image_caption, image_modalityMajor)
        image_id, caption = rec.get("image_id"), rec.get("image_caption")
        modality = rec.get("image_modalityMajor")
    uid, img_large = rec.get("uid"), rec.get("imgLarge")
    missing = [
        n for n, v in (("uid", uid), ("image.id", image_id), ("imgLarge", img_large)) if not v
    ]
    if missing:
        raise GlomsslError(
            f"{where}: Open-i record lacks {', '.join(missing)}; the server answer is not Open-i's shape"
        )
    date = rec.get("journal_date")
    year = _s(date.get("year")) if isinstance(date, dict) else _s(date)[-4:]
    mesh = rec.get("MeSH")
    major = mesh.get("major") if isinstance(mesh, dict) else rec.get("MeSH_major")
    return Figure(
        uid=_s(uid),
        image_id=_s(image_id),
        img_large=_s(img_large),
        pmcid=_s(rec.get("pmcid")),
        caption=html_to_text(_s(caption)),
        license=_s(rec.get("ccLicense")),
        license_url=_s(rec.get("licenseURL")),
        title=html_to_text(_s(rec.get("title"))),
        journal=_s(rec.get("journal_title")),
        year=year,
        authors=_s(rec.get("authors")),
        modality=_s(modality),
        doc_source=_s(rec.get("docSource")),
        mesh_major=tuple(str(m) for m in major) if isinstance(major, list) else (),
    )


@dataclass
class SearchPage:
    """One answered page: the indices served, the overall total and the parsed figures."""

    min: int
    max: int
    count: int
    total: int
    figures: list[Figure]
    invalid: list[str] = field(default_factory=list)  # why records were skipped (strict=False)
    attempts: int = 1  # HTTP requests it took, retries included (set by OpenIClient.fetch_page)


def _int(d: dict[str, Any], name: str, where: str) -> int:
    try:
        return int(d[name])
    except (KeyError, TypeError, ValueError) as exc:
        raise GlomsslError(
            f"{where}: field {name!r} missing or not a number in Open-i's answer"
        ) from exc


class InvalidJson(GlomsslError):
    """A search answer that is not JSON at all (e.g. a body cut short by the server)."""


def parse_page(body: bytes | str, where: str = "Open-i answer", strict: bool = True) -> SearchPage:
    """Parse a search response; malformed JSON (:class:`InvalidJson`) or a ``Query-Error`` raise
    GlomsslError.

    With ``strict=False`` a single malformed record (e.g. without ``imgLarge``) is skipped and its
    reason kept in ``invalid``, so one odd record among thousands does not block a long crawl.
    """
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidJson(
            f"{where}: not valid JSON ({exc}); is --endpoint an Open-i server?"
        ) from exc
    if not isinstance(data, dict):
        raise GlomsslError(f"{where}: expected a JSON object; is --endpoint an Open-i server?")
    if "Query-Error" in data:
        raise GlomsslError(
            f"Open-i rejected the query: {data['Query-Error']}; check --query/--image-type/--collection"
        )
    total = _int(data, "total", where)
    if total == 0 or "list" not in data:
        if total != 0:
            raise GlomsslError(f"{where}: total={total} but no 'list' of records")
        return SearchPage(0, -1, 0, 0, [])
    records = data["list"]
    if not isinstance(records, list):
        raise GlomsslError(f"{where}: 'list' is not a JSON array")
    mn, mx = _int(data, "min", where), _int(data, "max", where)
    figures, invalid = [], []
    for i, r in enumerate(records):
        try:
            figures.append(parse_record(r, f"{where}, record {mn + i}"))
        except GlomsslError as exc:
            if strict:
                raise
            invalid.append(str(exc))
    return SearchPage(mn, mx, len(records), total, figures, invalid)


def search_params(
    query: str,
    m: int,
    n: int,
    image_type: str | None = None,
    collection: str | None = None,
    licenses: tuple[str, ...] = (),
) -> dict[str, str]:
    """Open-i's own parameter names (API.md): query, m/n (1-based, inclusive), it, coll, lic."""
    p = {"query": query, "m": str(m), "n": str(n)}
    if image_type:
        p["it"] = image_type
    if collection:
        p["coll"] = collection
    if licenses:
        p["lic"] = ",".join(licenses)
    return p


class OpenIClient:
    """Search pages and image URLs of one Open-i endpoint, through a polite :class:`HttpClient`."""

    def __init__(self, endpoint: str, http: HttpClient) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.http = http

    def search_url(self, params: dict[str, str]) -> str:
        return f"{self.endpoint}/api/search?{urlencode(params)}"

    def fetch_page(self, params: dict[str, str], retry_invalid: bool = False) -> SearchPage:
        """One search page. With ``retry_invalid`` an answer that is not JSON (a 200 whose body was
        cut short) is transient: it is asked again with the client's backoff, like a 5xx."""
        import time

        url = self.search_url(params)
        tries = self.http.retry.max_retries + 1 if retry_invalid else 1
        sent = 0  # every HTTP request for this page: the client's retries and ours
        for k in range(tries):
            got = self.http.get(url, max_bytes=64 << 20)
            sent += len(got.attempts)
            if got.body is None:
                raise GlomsslError(
                    f"Open-i search {url} failed ({got.error}); check --endpoint or try again later"
                )
            try:
                page = parse_page(got.body, where=f"Open-i answer to {url}", strict=False)
            except InvalidJson:
                if k == tries - 1:
                    if retry_invalid:
                        raise InvalidJson(
                            f"Open-i answered {url} {tries} times with a body that is not JSON "
                            "(cut short?); run the same command again later to resume"
                        ) from None
                    raise
                time.sleep(self.http.backoff_delay(k))
            else:
                page.attempts = sent
                return page
        raise AssertionError("unreachable")  # pragma: no cover

    def iter_pages(
        self,
        query: str,
        start: int = 1,
        page_size: int = 30,
        image_type: str | None = None,
        collection: str | None = None,
        licenses: tuple[str, ...] = (),
        stop_at: int | None = None,
    ) -> Iterator[SearchPage]:
        """Yield pages from index ``start`` on, following the server's ``max``, until ``total``
        (or index ``stop_at``). A page that serves nothing new ends the search rather than loop."""
        m = start
        while stop_at is None or m <= stop_at:
            params = search_params(query, m, m + page_size - 1, image_type, collection, licenses)
            page = self.fetch_page(params, retry_invalid=m > 1)  # page 1 bad: not an Open-i server
            yield page
            if page.total == 0 or page.count == 0 or page.max < m:
                return
            m = page.max + 1
            if m > page.total:
                return

    def image_url(self, img_large: str) -> str | None:
        """``{endpoint}{imgLarge}``, or None if the path points off the endpoint (a record may carry
        an absolute URL, e.g. the flattened MedPix dump; we only fetch from the server we search)."""
        if img_large.startswith("/") and not img_large.startswith("//"):
            return self.endpoint + img_large
        if img_large.startswith(self.endpoint + "/"):
            return img_large
        return None
