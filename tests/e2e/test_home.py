"""`GET /` on the public port: a small page on what this is and how to point clients at it,
instead of a pass-through to the upstream."""

from __future__ import annotations

from rawhttp import connect, get, read_answer, send


def test_the_root_page_says_how_to_set_hf_endpoint(shared_mirror, emu):
    r = shared_mirror.get("/")
    assert r.status_code == 200, (r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("text/html")
    assert "hubcache" in r.text
    assert f"export HF_ENDPOINT={shared_mirror.url}<" in r.text
    assert f"curl -LO {shared_mirror.url}/openai-community/gpt2/resolve/main/config.json" in r.text
    assert not [e for e in emu.stats()["recent"] if e["path"] in ("/", "")], \
        "GET / was passed through to the upstream"
    head = shared_mirror.head("/")
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len(r.content)


def test_the_root_page_uses_the_configured_public_url(emu, mirror_factory):
    m = mirror_factory(emu, public_url="https://hf.mirror.example/hub")
    r = m.get("/")
    assert r.status_code == 200
    assert "export HF_ENDPOINT=https://hf.mirror.example/hub<" in r.text


def test_a_hostile_host_header_is_escaped_on_the_root_page(shared_mirror):
    with connect(shared_mirror.url) as s:
        send(s, get("/", host='x"><script>alert(1)</script>'))
        answer = read_answer(s)
    assert answer.status == 200, answer
    assert b"<script>" not in answer.body
    assert b"&lt;script&gt;" in answer.body
