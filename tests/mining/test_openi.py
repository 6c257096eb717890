"""Open-i client: record parsing, HTML captions, Query-Error, malformed answers, pagination."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from glomssl.errors import GlomsslError
from glomssl.mining.download import HttpClient
from glomssl.mining.openi import (
    OpenIClient,
    html_to_text,
    parse_page,
    parse_record,
    search_params,
)
from glomssl.mining.replay import Faults, ReplayServer, make_synthetic_replay


def test_html_caption_to_plain_text() -> None:
    html = "<p><b>A</b>, glomerulus&nbsp;with <i>PAS</i> &amp; H&amp;E &lt;40x&gt;.</p><p>B, tubule</p>"
    assert html_to_text(html) == "A, glomerulus with PAS & H&E <40x>. B, tubule"
    assert html_to_text(None) == ""


@pytest.mark.realdata
def test_parse_verbatim_openi_response(shared_data: Path) -> None:
    body = (shared_data / "openi" / "openi_cxr_response_verbatim.json").read_bytes()
    page = parse_page(body)
    assert (page.min, page.max, page.count, page.total) == (1, 2, 2, 7470)
    a, b = page.figures
    # two figures of ONE article: same uid, different image ids
    assert a.uid == b.uid == "CXR1" and {a.image_id, b.image_id} == {"F1", "F2"}
    assert a.key != b.key
    assert a.img_large == "/imgs/512/1/1/CXR1_1_IM-0001-3001.png"
    assert a.license == "byncnd" and a.year == "2013" and a.modality == "x"


@pytest.mark.realdata
def test_parse_flattened_medpix_records(shared_data: Path) -> None:
    recs = json.loads((shared_data / "openi" / "openi_medpix_records_flattened.json").read_text())
    figs = [parse_record(r) for r in recs]
    assert len(figs) == 100
    assert all(f.uid and f.image_id and f.img_large.startswith("https://") for f in figs)
    # the flattened dump's absolute image URLs are refused unless they are on the endpoint
    client = OpenIClient("http://127.0.0.1:9", HttpClient("t", rate=0))
    assert client.image_url(figs[0].img_large) is None
    assert (
        OpenIClient("https://openi.nlm.nih.gov", HttpClient("t")).image_url(figs[0].img_large)
        == figs[0].img_large
    )


def test_total_zero_and_query_error_and_malformed() -> None:
    empty = parse_page(b'{"total": 0}')
    assert empty.total == 0 and empty.figures == []
    with pytest.raises(GlomsslError, match="Invalid request type"):
        parse_page(b'{"Query-Error": "Invalid request type."}')
    with pytest.raises(GlomsslError, match="not valid JSON"):
        parse_page(b'{"min": 1, "max": 2, "list": [')
    with pytest.raises(GlomsslError, match="lacks image.id"):
        parse_page(json.dumps({"min": 1, "max": 1, "total": 1, "list": [{"uid": "X"}]}))
    with pytest.raises(GlomsslError, match="'total' missing"):
        parse_page(b'{"list": []}')


def test_search_params_use_openi_names() -> None:
    p = search_params("glomerulus", 31, 60, "mc", "pmc", ("by", "bync"))
    assert p == {
        "query": "glomerulus",
        "m": "31",
        "n": "60",
        "it": "mc",
        "coll": "pmc",
        "lic": "by,bync",
    }


@pytest.mark.parametrize("max_page", [None, 4])
def test_pagination_follows_server_max(tmp_path: Path, max_page: int | None) -> None:
    """A server may serve fewer records than asked: the next page starts after ITS max."""
    folder = make_synthetic_replay(tmp_path / "rp", 23, size=8)
    with ReplayServer(folder, faults=Faults(max_page=max_page)) as server:
        client = OpenIClient(server.url, HttpClient("test", rate=0))
        pages = list(client.iter_pages("glomerulus", page_size=10))
        searches = server.requests_to("/api/search")
    ids = [f.key for p in pages for f in p.figures]
    assert len(ids) == 23 and len(set(ids)) == 23
    per = max_page or 10
    assert [p.count for p in pages] == [per] * (23 // per) + [23 % per]
    assert len(searches) == len(pages)
    assert all(p.total == 23 for p in pages)


def test_search_retries_500_then_fails_cleanly(tmp_path: Path) -> None:
    folder = make_synthetic_replay(tmp_path / "rp", 3, size=8)
    with ReplayServer(folder, faults=Faults(first_500=1)) as server:
        client = OpenIClient(server.url, HttpClient("t", rate=0, retry=_fast(2)))
        assert sum(p.count for p in client.iter_pages("glomerulus")) == 3
    with ReplayServer(folder, faults=Faults(first_500=10)) as server:
        client = OpenIClient(server.url, HttpClient("t", rate=0, retry=_fast(1)))
        with pytest.raises(GlomsslError, match="Open-i search .* failed"):
            list(client.iter_pages("glomerulus"))


def test_unknown_image_type_is_a_query_error_at_the_server(tmp_path: Path) -> None:
    folder = make_synthetic_replay(tmp_path / "rp", 2, size=8)
    with ReplayServer(folder) as server:
        client = OpenIClient(server.url, HttpClient("t", rate=0))
        with pytest.raises(GlomsslError, match="Invalid request type"):
            list(client.iter_pages("glomerulus", image_type="zz"))
        assert [p.total for p in client.iter_pages("no-such-word")] == [0]


def _fast(retries: int):  # type: ignore[no-untyped-def]
    from glomssl.mining.download import RetryPolicy

    return RetryPolicy(max_retries=retries, base_s=0.01, cap_s=0.05)


def test_lenient_parse_skips_one_bad_record() -> None:
    good = {"uid": "PMC1", "image": {"id": "F1", "caption": "x"}, "imgLarge": "/imgs/512/a.png"}
    body = json.dumps({"min": 1, "max": 2, "count": 2, "total": 2, "list": [{"uid": "PMC2"}, good]})
    page = parse_page(body, strict=False)
    assert [f.key for f in page.figures] == [("PMC1", "F1")] and page.count == 2
    assert len(page.invalid) == 1 and "lacks image.id, imgLarge" in page.invalid[0]
