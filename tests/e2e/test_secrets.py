"""No secrets in logs or error answers: a signed CDN URL (whoever holds it can fetch the gated
file until it expires) and a client's token never appear in the mirror's log or in what a
client is told when an upstream fails; clients get generic messages."""

from __future__ import annotations

from helpers import VALID

GATED = "acme/gated-model"
SECRETS = ("Signature", "Expires=", "/repos/", "hf_valid_token", "hf_other_token")


def leaked(text: str, extra: tuple = ()) -> list[str]:
    return [s for s in SECRETS + extra if s in text]


def test_a_gated_download_failing_at_the_cdn_leaks_no_signed_url_or_token(own_emu, mirror_factory):
    m = mirror_factory(own_emu)
    entry = own_emu.file(GATED, "main", "model.safetensors")
    own_emu.fault(kind="down", host="cdn")          # every CDN request: connection dropped
    r = m.resolve("GET", GATED, "main", "model.safetensors", headers=VALID, timeout=120)
    assert r.status_code in (502, 503, 504), (r.status_code, r.content[:300])
    attempts = [e for e in own_emu.stats()["cdn_requests"] if entry["sha256"] in e["path"]]
    assert attempts, "the CDN was never asked: the test proves nothing"
    log = m.log_path.read_text(errors="replace")
    assert entry["sha256"] in log, "the failed fill is not in the log at all"
    assert not leaked(log), f"the mirror log shows {leaked(log)}"
    body = r.content.decode(errors="replace") + " ".join(f"{k}: {v}" for k, v in r.headers.items())
    assert not leaked(body, (own_emu.cdn,)), f"the client was told {leaked(body, (own_emu.cdn,))}: {body}"


def test_no_upstream_answering_is_reported_without_upstream_addresses(own_emu, mirror_factory):
    m = mirror_factory(own_emu)
    own_emu.fault(kind="down", host="hub")
    for path in ("/acme/tiny-model/resolve/main/config.json", "/api/models/acme/tiny-model",
                 "/api/models/acme/tiny-model/commits/main"):
        r = m.get(path, headers=VALID)
        assert r.status_code in (502, 503, 504), (path, r.status_code)
        body = r.content.decode(errors="replace") + " ".join(r.headers.values())
        hub = own_emu.hub.split("://", 1)[1]
        assert hub not in body and not leaked(body), (path, body)
        assert "hubcache" in body, body
