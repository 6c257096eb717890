"""glomssl dedup: pHash, pair searches against brute force, union-find keepers, the whole command."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from glomssl.cli import cli
from glomssl.errors import GlomsslError
from glomssl.manifest import image_row, read_manifest, write_manifest
from glomssl.mining.dedup import DedupConfig, run_dedup
from glomssl.mining.dup_groups import Links, group_rows
from glomssl.mining.embedding_search import exact_cosine_pairs, ivf_self_join, normalize_rows
from glomssl.mining.image_hashes import hamming_pairs, phash, tiny_descriptor


def scene(seed: int, size: int = 200) -> Image.Image:
    """A distinct random picture: coloured blobs on a tinted background, slightly blurred, noisy."""
    rng = np.random.default_rng(seed)
    im = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(150, 250, 3)))
    d = ImageDraw.Draw(im)
    for _ in range(14):
        x, y = rng.integers(0, size, 2)
        r = int(rng.integers(8, 40))
        d.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    im = im.filter(ImageFilter.GaussianBlur(2))
    a = np.asarray(im, np.float64) + rng.normal(0, 4, (size, size, 3))
    return Image.fromarray(a.clip(0, 255).astype(np.uint8))


def popcount(x: np.ndarray) -> np.ndarray:
    return np.unpackbits(x.astype(">u8").view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)


def test_phash_is_robust_to_resizing_and_separates_pictures() -> None:
    a = scene(1)
    h = phash(a)
    same = [
        a.resize((120, 120), Image.Resampling.BILINEAR),
        ImageEnhance.Brightness(a).enhance(1.1),
        a.filter(ImageFilter.GaussianBlur(1)),
    ]
    for b in same:
        assert int(popcount(np.array([h ^ phash(b)], np.uint64))[0]) <= 6
    others = np.array([phash(scene(s)) for s in range(2, 12)], np.uint64)
    assert popcount(others ^ np.uint64(h)).min() > 12
    assert 0 <= h < 2**64


def test_hamming_pairs_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, 400, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    for k in range(0, 60, 3):  # plant near copies with 1..5 flipped bits
        flip = np.uint64(0)
        for b in rng.choice(64, int(rng.integers(1, 6)), replace=False):
            flip |= np.uint64(1) << np.uint64(b)
        hashes[k + 1] = hashes[k] ^ flip
    i, j, d = hamming_pairs(hashes, 6, batch=64)
    got = {(a, b, c) for a, b, c in zip(i.tolist(), j.tolist(), d.tolist())}
    want = set()
    for a in range(len(hashes)):
        dist = popcount(hashes[a + 1 :] ^ hashes[a])
        for off in np.nonzero(dist <= 6)[0]:
            want.add((a, a + 1 + int(off), int(dist[off])))
    assert got == want and len(want) >= 20
    # the threshold is inclusive: 6 differing bits match at 6, not at 5
    edge = np.array([0, 0b111111, 0b1111111], np.uint64)
    assert [a.tolist() for a in hamming_pairs(edge, 6)] == [[0, 1], [1, 2], [6, 1]]
    assert [a.tolist() for a in hamming_pairs(edge, 5)] == [[1], [2], [1]]


def planted(n: int, d: int, pairs: int, seed: int = 0) -> tuple[np.ndarray, set[tuple[int, int]]]:
    """Clustered unit vectors with ``pairs`` planted near duplicates (cosine about 0.97-0.99)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, d)).astype(np.float32)
    x = centres[rng.integers(0, 20, n)] + rng.standard_normal((n, d)).astype(np.float32)
    normalize_rows(x)
    perm = rng.permutation(n)
    src, dst = perm[:pairs], perm[pairs : 2 * pairs]
    x[dst] = x[src] + 0.15 / np.sqrt(d) * rng.standard_normal((pairs, d)).astype(np.float32)
    normalize_rows(x)
    return x, {(min(a, b), max(a, b)) for a, b in zip(src.tolist(), dst.tolist())}


def test_exact_cosine_pairs_match_brute_force() -> None:
    x, truth = planted(1500, 32, 40)
    i, j, s = exact_cosine_pairs(x, 0.95, batch=256)
    sims = x @ x.T
    iu = np.triu_indices(len(x), 1)
    want = {
        (a, b) for a, b in zip(iu[0][sims[iu] >= 0.95].tolist(), iu[1][sims[iu] >= 0.95].tolist())
    }
    assert set(zip(i.tolist(), j.tolist())) == want
    assert truth <= want
    np.testing.assert_allclose(s, sims[i, j], atol=1e-5)
    assert np.all(i < j)


def test_ivf_join_finds_planted_pairs_with_exact_similarities() -> None:
    x, truth = planted(6000, 64, 150, seed=3)
    i, j, s, info = ivf_self_join(x, 0.95, nlist=40, nprobe=2, batch=512)
    assert info["index"] == "ivf" and info["nlist"] == 40
    found = set(zip(i.tolist(), j.tolist()))
    assert len(found) == len(i)  # each pair once, although lists overlap
    assert len(truth & found) >= 0.98 * len(truth)
    np.testing.assert_allclose(s, np.einsum("nd,nd->n", x[i], x[j]), atol=1e-5)
    assert np.all(s >= 0.95) and np.all(i < j)


@pytest.mark.parametrize("n, d", [(2, 16), (5, 16), (30, 128), (300, 128)])
def test_ivf_join_on_tiny_inputs(n: int, d: int) -> None:
    """--exact-max 0 on a handful of rows still works (fewer lists, no projection)."""
    x = normalize_rows(np.random.default_rng(0).standard_normal((n, d)).astype(np.float32))
    x[1] = x[0]
    i, j, s, info = ivf_self_join(x, 0.95)
    assert (i.tolist(), j.tolist()) == ([0], [1]) and info["nlist"] >= 1


def test_group_rows_keeps_largest_or_best_and_explains_drops() -> None:
    # rows 0-1 sha256, 1-2 phash, 3-4 embedding, 5 alone
    links = Links(
        np.array([0, 1, 3]),
        np.array([1, 2, 4]),
        np.array([0, 1, 2], np.int8),
        np.array([0, 4, 0.97]),
    )
    sizes = np.array([100.0, 400.0, 100.0, 50.0, 50.0, 10.0])
    scores = np.array([0.9, 0.1, np.nan, 0.2, 0.8, np.nan])
    g = group_rows(6, links, sizes, scores, "largest")
    assert g["keeper"].tolist() == [1, 1, 1, 4, 4, 5]  # equal sizes 3, 4 -> higher score
    assert g["reached"][0] == (1, 0, 0.0) and g["reached"][2] == (1, 1, 4.0)
    assert g["reached"][3] == (4, 2, 0.97)
    g = group_rows(6, links, sizes, np.full(6, np.nan), "largest")
    assert g["keeper"].tolist() == [1, 1, 1, 3, 3, 5]  # full tie -> the earlier row
    g = group_rows(6, links, sizes, scores, "best")
    assert g["keeper"].tolist() == [0, 0, 0, 4, 4, 5]
    assert g["reached"][2] == (1, 1, 4.0)  # reached through row 1


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    """A manifest with one group of each kind and two unrelated pictures."""
    folder = tmp_path / "panels"
    folder.mkdir()
    base = scene(10, 240)
    base.save(folder / "a.png")
    (folder / "a_copy.png").write_bytes((folder / "a.png").read_bytes())  # exact
    base.resize((150, 150), Image.Resampling.LANCZOS).save(
        folder / "a_small.jpg", quality=80
    )  # phash
    other = scene(11)
    other.save(folder / "b.png")
    ImageEnhance.Contrast(other).enhance(0.6).save(folder / "b_faint.png")  # phash and embedding
    scene(12).save(folder / "c.png")
    scene(13).save(folder / "d.png")
    rows = [
        image_row(
            folder / name, folder, uid=f"u{k}", license="by", parent="fig.jpg", bbox=[0, 0, 5, 5]
        )
        for k, name in enumerate(
            ["a.png", "a_small.jpg", "a_copy.png", "b.png", "b_faint.png", "c.png", "d.png"]
        )
    ]
    write_manifest(folder / "manifest.jsonl", rows)
    return folder


def _dropped(out: Path) -> dict[str, dict]:
    rows = [json.loads(x) for x in (out / "dropped.jsonl").read_text().splitlines()]
    return {r["path"]: r for r in rows}


def test_run_dedup_groups_keepers_and_reasons(tmp_path: Path, corpus: Path) -> None:
    out = tmp_path / "dedup"
    cfg = DedupConfig(
        input=str(corpus / "manifest.jsonl"),
        out=str(out),
        phash_threshold=4,
        cosine=0.97,
        quiet=True,
    )
    s = run_dedup(cfg)
    assert s["input"] == 7 and s["embedding_index"] == "flat"
    kept = read_manifest(out / "manifest.jsonl")
    names = sorted(Path(r["path"]).name for r in kept)
    assert "a.png" in names and "c.png" in names and "d.png" in names
    assert "a_copy.png" not in names and "a_small.jpg" not in names
    assert all(r["uid"].startswith("u") and r["license"] == "by" and r["bbox"] for r in kept)
    drops = _dropped(out)
    assert drops["a_copy.png"]["reason"] == "sha256" and drops["a_copy.png"]["dup_of"] == "a.png"
    assert drops["a_small.jpg"]["dup_of"] == "a.png"  # the largest of the group is kept
    assert drops["a_small.jpg"]["reason"] in ("phash", "embedding")
    b_drop = next(r for p, r in drops.items() if p.startswith("b"))
    assert (
        b_drop["dup_of"] in ("b.png", "b_faint.png")
        and b_drop["group"] != drops["a_copy.png"]["group"]
    )
    assert s["kept"] == 4 and s["dropped"] == 3 and s["groups"] == 2

    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name[0] != "."}
    assert run_dedup(cfg) == s
    assert before == {
        p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name[0] != "."
    }


def test_rerun_reads_no_image_again(
    tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import glomssl.data.images as images_mod

    cfg = DedupConfig(input=str(corpus / "manifest.jsonl"), out=str(tmp_path / "o"), quiet=True)
    s = run_dedup(cfg)

    def refuse(*args: object, **kw: object) -> None:
        raise AssertionError("image opened although its hashes are cached")

    monkeypatch.setattr(images_mod, "load_rgb", refuse)
    assert run_dedup(cfg) == s


def test_each_method_alone(tmp_path: Path, corpus: Path) -> None:
    m = str(corpus / "manifest.jsonl")
    s = run_dedup(DedupConfig(input=m, out=str(tmp_path / "s"), methods=["sha256"], quiet=True))
    assert s["dropped"] == 1 and s["reasons"] == {"sha256": 1}
    s = run_dedup(DedupConfig(input=m, out=str(tmp_path / "p"), methods=["phash"], quiet=True))
    assert set(_dropped(tmp_path / "p")) >= {"a_copy.png", "a_small.jpg"}
    s = run_dedup(
        DedupConfig(
            input=m, out=str(tmp_path / "e"), methods=["embedding"], cosine=0.97, quiet=True
        )
    )
    d = _dropped(tmp_path / "e")
    assert {"a_copy.png", "a_small.jpg"} <= set(d) and ({"b.png", "b_faint.png"} & set(d))
    assert all(r["reason"] == "embedding" and r["similarity"] >= 0.97 for r in d.values())
    # the tiny-image descriptor tells different pictures apart
    sims = tiny_descriptor(scene(12)) @ tiny_descriptor(scene(13))
    assert sims < 0.9


def test_external_embeddings_npz(tmp_path: Path, corpus: Path) -> None:
    rows = read_manifest(corpus / "manifest.jsonl")
    paths = [r["path"] for r in rows]
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((len(paths), 16)).astype(np.float32)
    c, d = paths.index("c.png"), paths.index("d.png")
    emb[d] = emb[c] * 3.0  # same direction: cosine 1 although the pictures differ
    npz = tmp_path / "emb.npz"
    np.savez(npz, paths=np.array(paths), embeddings=emb)
    out = tmp_path / "o"
    s = run_dedup(
        DedupConfig(
            input=str(corpus / "manifest.jsonl"),
            out=str(out),
            embeddings=str(npz),
            methods=["embedding"],
            quiet=True,
        )
    )
    assert s["embedded"] == 7 and s["dropped"] == 1
    drop = _dropped(out)["d.png"]
    assert (
        drop["dup_of"] == "c.png"
        and drop["reason"] == "embedding"
        and drop["similarity"] == pytest.approx(1.0, abs=1e-5)
    )
    # rows absent from the npz simply take no part; a file matching nothing is an error
    np.savez(npz, paths=np.array(["x.png", "y.png"]), embeddings=emb[:2])
    with pytest.raises(GlomsslError, match="embed this manifest"):
        run_dedup(
            DedupConfig(input=str(corpus / "manifest.jsonl"), out=str(out), embeddings=str(npz))
        )


@pytest.mark.parametrize(
    "payload, message",
    [
        (
            {"paths": np.array(["a.png"], dtype=object), "embeddings": np.zeros((1, 4))},
            "plain strings and numbers",
        ),
        ({"paths": np.array(["a.png"]), "vectors": np.zeros((1, 4))}, "lacks the arrays"),
        ({"paths": np.array(["a.png", "b.png"]), "embeddings": np.zeros((3, 4))}, "N = len"),
        ({"paths": np.array(["a.png", "a.png"]), "embeddings": np.zeros((2, 4))}, "repeated"),
        ({"paths": np.array(["a.png"]), "embeddings": np.full((1, 4), np.nan)}, "NaN"),
    ],
)
def test_bad_embedding_files(tmp_path: Path, corpus: Path, payload: dict, message: str) -> None:
    npz = tmp_path / "bad.npz"
    np.savez(npz, **payload)
    with pytest.raises(GlomsslError, match=message) as info:
        run_dedup(
            DedupConfig(
                input=str(corpus / "manifest.jsonl"), out=str(tmp_path / "o"), embeddings=str(npz)
            )
        )
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("data", [b"", b"PK\x03\x04 cut short", b"\x93NUMPY"])
def test_broken_embedding_files_are_one_line_errors(tmp_path: Path, data: bytes) -> None:
    """Empty (np.load raises EOFError, which click turns into "Aborted!"), zip start, npy start."""
    from glomssl.mining.embedding_search import load_embeddings

    npz = tmp_path / "emb.npz"
    npz.write_bytes(data)
    with pytest.raises(GlomsslError, match=r"emb\.npz is not a") as info:
        load_embeddings(npz)
    assert "\n" not in str(info.value)


def test_embeddings_too_large_for_free_memory_are_refused(
    tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psutil

    rows = read_manifest(corpus / "manifest.jsonl")
    npz = tmp_path / "emb.npz"
    np.savez_compressed(npz, paths=np.array([r["path"] for r in rows]), embeddings=np.ones((7, 64)))

    class Tiny:
        available = 1000

    monkeypatch.setattr(psutil, "virtual_memory", lambda: Tiny())
    with pytest.raises(GlomsslError, match="MiB are free"):
        run_dedup(
            DedupConfig(
                input=str(corpus / "manifest.jsonl"), out=str(tmp_path / "o"), embeddings=str(npz)
            )
        )


def test_folder_input_unreadable_and_cli(tmp_path: Path, corpus: Path) -> None:
    (corpus / "broken.png").write_bytes(b"garbage")
    runner = CliRunner()
    out = tmp_path / "cli"
    res = runner.invoke(
        cli,
        [
            "dedup",
            "--input",
            str(corpus),
            "--out",
            str(out),
            "--cosine",
            "0.97",
            "--phash-threshold",
            "4",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "dropped 3 in 2 groups" in res.output and "unreadable 1" in res.output
    kept = read_manifest(out / "manifest.jsonl")
    assert all((out / r["path"]).is_file() for r in kept)  # hard-linked into OUT/images
    skipped = [json.loads(x) for x in (out / "skipped.jsonl").read_text().splitlines()]
    assert [Path(f["path"]).name for f in skipped] == ["broken.png"]
    s = run_dedup(
        DedupConfig(input=str(corpus), out=str(tmp_path / "sha"), methods=["sha256"], quiet=True)
    )
    assert s["skipped"] == 1 and s["dropped"] == 1  # unreadable even though no image is decoded
    read_manifest(tmp_path / "sha" / "manifest.jsonl")  # every kept row is a valid manifest row
    res = runner.invoke(
        cli, ["dedup", "--input", str(corpus), "--out", str(out), "--methods", "sha1"]
    )
    assert (
        res.exit_code == 2
        and res.output.count("\n") == 1
        and "sha256,phash,embedding" in res.output
    )


def test_real_subprocess(tmp_path: Path, corpus: Path) -> None:
    """The installed command end to end: success, then a bad option as one line and exit code 2."""
    import subprocess
    import sys

    out = tmp_path / "sub"
    cmd = [sys.executable, "-m", "glomssl", "dedup", "--input", str(corpus / "manifest.jsonl")]
    res = subprocess.run(cmd + ["--out", str(out)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "dedup: 7 rows" in res.stdout and (out / "dropped.jsonl").is_file()
    res = subprocess.run(
        cmd + ["--out", str(out), "--cosine", "3"], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().count("\n") == 0 and "--cosine" in res.stderr


@pytest.mark.realdata
def test_real_glomeruli_no_false_groups_and_planted_copies_found(
    tmp_path: Path, shared_data: Path
) -> None:
    """Distinct real glomerulus crops look alike but are not duplicates; re-exported copies are."""
    files = sorted((shared_data / "glomeruli" / "images").glob("*.png"))[::3]
    folder = tmp_path / "g"
    folder.mkdir()
    for f in files:
        (folder / f.name).symlink_to(f)  # linked, never copied into the project
    planted = {}
    for k, f in enumerate(files[:6]):
        im = Image.open(f).convert("RGB")
        variant = [
            im.resize((160, 160), Image.Resampling.LANCZOS),
            ImageEnhance.Brightness(im).enhance(1.08),
            im.filter(ImageFilter.GaussianBlur(0.8)),
        ][k % 3]
        name = f"copy_{k}.jpg"
        variant.save(folder / name, quality=75)
        planted[name] = f.name
    out = tmp_path / "o"
    s = run_dedup(DedupConfig(input=str(folder), out=str(out), quiet=True))
    drops = _dropped(out)
    assert s["dropped"] == len(planted) and s["groups"] == len(planted), drops
    for name, original in planted.items():
        assert drops[name]["dup_of"] == original  # the larger/original is kept
        assert drops[name]["reason"] in ("phash", "embedding")


def crowded(n: int, d: int = 64, spread: float = 0.02, seed: int = 0) -> np.ndarray:
    """Distinct rows squeezed into a narrow cone (what a random-init encoder does): cosine ~0.99."""
    rng = np.random.default_rng(seed)
    common = rng.standard_normal(d).astype(np.float32)
    x = common + spread * np.linalg.norm(common) * rng.standard_normal((n, d)).astype(np.float32)
    return normalize_rows(x / np.sqrt(d))


def _npz_corpus(tmp_path: Path, emb: np.ndarray) -> tuple[Path, Path]:
    folder = tmp_path / "imgs"
    folder.mkdir()
    rows = []
    rng = np.random.default_rng(0)
    for k in range(len(emb)):  # the pictures only need to exist: the npz says how they relate
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(
            folder / f"{k:03d}.png"
        )
        rows.append(image_row(folder / f"{k:03d}.png", folder))
    write_manifest(folder / "manifest.jsonl", rows)
    npz = tmp_path / "emb.npz"
    np.savez(npz, paths=np.array([r["path"] for r in rows]), embeddings=emb)
    return folder / "manifest.jsonl", npz


def test_crowded_embeddings_are_calibrated_not_collapsed(tmp_path: Path) -> None:
    """At cosine 0.95 every row of a crowded embedding links to every other (one group, all but one
    dropped); the calibrated threshold keeps the distinct rows and still finds real copies."""
    emb = crowded(60)
    emb[7] = emb[3] + 1e-4 * np.random.default_rng(1).standard_normal(64).astype(np.float32)
    emb = normalize_rows(emb)
    assert float(np.min(emb @ emb.T)) > 0.95  # the old default would have linked all 60
    manifest, npz = _npz_corpus(tmp_path, emb)
    cfg = DedupConfig(
        input=str(manifest), out=str(tmp_path / "o"), embeddings=str(npz), methods=["embedding"]
    )
    s = run_dedup(dataclasses.replace(cfg, quiet=True))
    assert (s["dropped"], s["kept"]) == (1, 59)
    assert s["embedding_threshold"] > 0.99 and s["neighbour_cosine"] > 0.95
    assert s["warnings"] and "--nn-ratio" in s["warnings"][0]
    drop = _dropped(tmp_path / "o")["007.png"]
    assert drop["dup_of"] == "003.png" and drop["similarity"] > s["embedding_threshold"]
    # without calibration the same run would drop nearly everything: refused, unless forced
    raw = dataclasses.replace(cfg, nn_ratio=0.0, out=str(tmp_path / "raw"), quiet=True)
    with pytest.raises(GlomsslError, match=r"would drop 59 of 60 rows .* --force") as info:
        run_dedup(raw)
    assert "\n" not in str(info.value) and not (tmp_path / "raw" / "manifest.jsonl").exists()
    assert not (tmp_path / "raw" / "dedup.yaml").exists()  # a refused run writes no config
    assert run_dedup(dataclasses.replace(raw, force=True))["dropped"] == 59


def test_identical_embeddings_are_refused_without_asking_for_a_higher_cosine(
    tmp_path: Path,
) -> None:
    """Embeddings that are all the same (an untrained encoder): --cosine cannot go higher, so the
    refusal does not suggest it; under 20 rows the same collapse is a warning, not silence."""
    emb = np.ones((30, 16), np.float32)
    manifest, npz = _npz_corpus(tmp_path, emb)
    cfg = DedupConfig(input=str(manifest), out=str(tmp_path / "o"), embeddings=str(npz),
                      methods=["embedding"], cosine=1.0, quiet=True)  # fmt: skip
    with pytest.raises(GlomsslError, match="would drop 29 of 30") as info:
        run_dedup(cfg)
    assert "raise --cosine" not in str(info.value) and "--force" in str(info.value)
    (tmp_path / "few").mkdir()
    few, npz8 = _npz_corpus(tmp_path / "few", np.ones((8, 16), np.float32))
    s = run_dedup(dataclasses.replace(cfg, input=str(few), embeddings=str(npz8),
                                      out=str(tmp_path / "f")))  # fmt: skip
    assert s["dropped"] == 7 and any("check dropped.jsonl" in w for w in s["warnings"])


def test_embeddings_that_are_a_folder_or_not_an_npz_are_named(tmp_path: Path) -> None:
    from glomssl.mining.embedding_search import load_embeddings

    with pytest.raises(GlomsslError, match="is a folder"):
        load_embeddings(tmp_path)
    text = tmp_path / "text.txt"
    text.write_text("not an npz")
    with pytest.raises(GlomsslError) as info:
        load_embeddings(text)
    assert "allow_pickle" not in str(info.value) and "glomssl embed" in str(info.value)


def test_calibration_leaves_well_spread_embeddings_alone(tmp_path: Path) -> None:
    """With an embedding whose neighbours are far apart, the user's --cosine applies unchanged."""
    rng = np.random.default_rng(5)
    x = normalize_rows(rng.standard_normal((300, 64)).astype(np.float32))  # 3rd-neighbour cos ~0.4
    src, dst = np.arange(0, 20, 2), np.arange(1, 20, 2)
    x[dst] = normalize_rows(x[src] + 0.02 * rng.standard_normal((10, 64)).astype(np.float32))
    truth = set(zip(src.tolist(), dst.tolist()))
    manifest, npz = _npz_corpus(tmp_path, x)
    s = run_dedup(
        DedupConfig(
            input=str(manifest),
            out=str(tmp_path / "o"),
            embeddings=str(npz),
            methods=["embedding"],
            quiet=True,
        )
    )
    assert s["embedding_threshold"] == 0.95 and s["warnings"] == []
    assert s["dropped"] == len(truth)


def test_cli_prints_the_calibration_warning_and_json(tmp_path: Path) -> None:
    emb = crowded(30)
    manifest, npz = _npz_corpus(tmp_path, emb)
    args = ["dedup", "--input", str(manifest), "--embeddings", str(npz), "--methods", "embedding"]
    res = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert "warning: embedding: cosine >= 0.95 would link ordinary neighbours" in res.output
    assert "dropped 0" in res.output
    res = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "o"), "--json"])
    s = json.loads(res.output)
    assert s["dropped"] == 0 and s["warnings"]


@pytest.mark.realdata
@pytest.mark.slow
def test_random_init_encoder_does_not_collapse_real_crops(
    tmp_path: Path, shared_data: Path
) -> None:
    """Issue 10.15: with a random-init encoder (the baseline users are told to make) dedup at the
    default --cosine 0.95 dropped 675 of the 676 distinct real glomerulus crops. Calibrated, it
    drops none of them, and still finds re-exported copies planted among them."""
    crops = sorted((shared_data / "glomeruli" / "images").glob("*.png"))
    folder = tmp_path / "g"
    folder.mkdir()
    for f in crops:
        (folder / f.name).symlink_to(f)  # linked, never copied into the project
    planted_copies = {}
    for k, f in enumerate(crops[:: len(crops) // 4][:4]):
        name = f"copy_{k}.jpg"
        Image.open(f).convert("RGB").resize((200, 200)).save(folder / name, quality=85)
        planted_copies[name] = f.name
    runner = CliRunner()
    run = tmp_path / "rand"
    common = ["--workers", "0", "--image-size", "32"]
    res = runner.invoke(
        cli,
        ["pretrain", "--data", str(folder), "--out", str(run), "--max-steps", "0", *common]
        + ["--accelerator", "cpu", "--quiet"],
    )
    assert res.exit_code == 0, res.output
    npz = tmp_path / "emb.npz"
    res = runner.invoke(
        cli,
        ["embed", "--checkpoint", str(run), "--input", str(folder), "--out", str(npz), *common]
        + ["--device", "cpu", "--quiet"],
    )
    assert res.exit_code == 0, res.output
    args = ["dedup", "--input", str(folder), "--embeddings", str(npz), "--methods", "embedding"]
    res = runner.invoke(cli, [*args, "--out", str(tmp_path / "o"), "--json"])
    assert res.exit_code == 0, res.output
    s = json.loads(res.output)
    assert s["embedded"] == 680 and s["neighbour_cosine"] > 0.95  # crowded: cosine 0.95 is noise
    drops = _dropped(tmp_path / "o")
    assert set(drops) == set(planted_copies), sorted(drops)[:10]
    assert all(drops[c]["dup_of"] == o for c, o in planted_copies.items())
