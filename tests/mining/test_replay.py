"""The Open-i replay server: Open-i's response shape, filters, faults, no path traversal."""

from __future__ import annotations

import http.client
import json
from pathlib import Path

import pytest
import requests

from glomssl.errors import GlomsslError
from glomssl.mining.replay import (
    Faults,
    ReplayServer,
    make_record,
    make_synthetic_replay,
    write_replay_folder,
)


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    return make_synthetic_replay(tmp_path / "rp", 12, size=8)


@pytest.mark.realdata
def test_response_shape_matches_verbatim_openi(folder: Path, shared_data: Path) -> None:
    verbatim = json.loads((shared_data / "openi" / "openi_cxr_response_verbatim.json").read_text())
    with ReplayServer(folder) as server:
        got = requests.get(
            server.url + "/api/search", params={"query": "glomerulus", "m": 1, "n": 5}
        ).json()
    assert list(got) == list(verbatim)  # min, max, count, total, approximage, list (in that order)
    assert (got["min"], got["max"], got["count"], got["total"]) == (1, 5, 5, 12)
    assert got["approximage"] == "false"
    rec, ref = got["list"][0], verbatim["list"][0]
    assert set(ref) - {"note", "impression", "Problems"} <= set(rec)
    assert set(rec["image"]) == set(ref["image"]) and set(rec["MeSH"]) == set(ref["MeSH"])
    assert rec["imgLarge"].startswith("/imgs/512/")  # relative to the site root, like Open-i


def test_filters_total_zero_and_query_error(folder: Path) -> None:
    with ReplayServer(folder) as server:

        def get(**p: str) -> dict:
            return requests.get(server.url + "/api/search", params=p).json()

        assert get(query="nothing-like-this") == {"total": 0}
        assert get(query="glomerulus", it="zz") == {"Query-Error": "Invalid request type."}
        assert get(query="glomerulus", it="mc")["total"] == 12
        assert get(query="glomerulus", it="x") == {"total": 0}
        assert get(query="kidney glomerulus")["total"] == 12  # AND of words
        assert get(query="nothing OR glomerulus")["total"] == 12  # OR of terms
        assert get(query="glomerulus", lic="byncnd") == {"total": 0}
        assert get(query="glomerulus", coll="pmc", lic="by,bync")["total"] == 12


def test_capped_pages_and_latency(folder: Path) -> None:
    with ReplayServer(folder, faults=Faults(max_page=4, latency_s=0.2)) as server:
        r = requests.get(
            server.url + "/api/search", params={"query": "glomerulus", "m": 3, "n": 12}
        )
        page = r.json()
        assert (page["min"], page["max"], page["count"]) == (3, 6, 4)
        assert r.elapsed.total_seconds() >= 0.19


def test_429_has_retry_after_and_500(folder: Path) -> None:
    with ReplayServer(folder, faults=Faults(first_429=1, first_500=1, retry_after_s=7)) as server:
        url = server.url + "/api/search?query=glomerulus"
        r1, r2, r3 = (requests.get(url) for _ in range(3))
        assert (r1.status_code, r1.headers["Retry-After"]) == (429, "7")
        assert r2.status_code == 500 and r3.status_code == 200
        assert [e.status for e in server.log] == [429, 500, 200]


def test_truncated_body_is_detected_by_the_client(folder: Path) -> None:
    with ReplayServer(folder, faults=Faults(first_truncated=1)) as server:
        url = server.url + "/api/search?query=glomerulus"
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            requests.get(url)
        assert requests.get(url).json()["total"] == 12


def test_no_path_traversal_out_of_the_folder(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("do not serve")
    folder = write_replay_folder(
        tmp_path / "rp",
        [make_record("PMC1", "F1", "/imgs/a.png")],
        {"/imgs/a.png": b"\x89PNG fake"},
    )
    with ReplayServer(folder) as server:
        host, port = server.httpd.server_address[:2]
        for path in (
            "/../secret.txt",
            "/imgs/../../secret.txt",
            "/%2e%2e/secret.txt",
            "/records.json",
        ):
            conn = http.client.HTTPConnection(str(host), int(port))
            conn.request("GET", path)  # raw path: requests would normalise the dots away
            resp = conn.getresponse()
            assert resp.status == 404 and b"do not serve" not in resp.read(), path
            conn.close()
        assert requests.get(server.url + "/imgs/a.png").content == b"\x89PNG fake"
    with pytest.raises(GlomsslError, match="leave the replay folder"):
        write_replay_folder(tmp_path / "rp2", [], {"/../../evil.png": b"x"})


def test_missing_records_json_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(GlomsslError, match="records.json"):
        ReplayServer(tmp_path)
    (tmp_path / "records.json").write_bytes(b"\x9f\xff binary")
    with pytest.raises(GlomsslError, match="records.json is not readable JSON"):
        ReplayServer(tmp_path)
