"""Upstream trust: clients' tokens go only to `origin` upstreams (or a mirror with
`forward_token: true`), access to gated and private repos is decided by origins only, and a
gated or private repo never fails over to an untrusted mirror.

Two emulators: the first plays huggingface.co (`trust: origin`), the second a third-party mirror
(`trust: mirror`), sometimes a leaky one that serves gated and private repos to anyone
(`--open-gates`) or says nothing about visibility (`--omit-visibility`). The mirror emulator's
request log records whose token each request carried."""

from __future__ import annotations

import pytest

from helpers import VALID, run_client, sha256, wait_until
from test_auth import GATED, PRIVATE, check_isolation, warm_as_alice

PUBLIC = "acme/tiny-model"
ORIGIN_DOWN = {"status": dict(kind="status", status=503, host="hub"),
               # slower than the origin's timeout below
               "slow": dict(kind="delay", ms=3000, host="hub")}


def chain(origin, mirror, **mirror_entry) -> list:
    return [{"url": origin, "timeout": "1s"}, {"url": mirror, "trust": "mirror", **mirror_entry}]


def users_seen(emu) -> list:
    """Whose token each hub request carried (None: no Authorization)."""
    return [e["user"] for e in emu.stats()["recent"] if e["host"] == "hub"]


def fetch_public_as_alice(m, emu) -> None:
    """Every cached route and a pass-through one, with alice's token, public repo."""
    for path in ("config.json", "model.safetensors"):
        entry = emu.file(PUBLIC, "main", path)
        assert m.resolve("HEAD", PUBLIC, "main", path, headers=VALID).status_code == 200, path
        r = m.resolve("GET", PUBLIC, "main", path, headers=VALID)
        assert r.status_code == 200 and sha256(r.content) == entry["sha256"], (path, r.status_code)
    for api in (f"/api/models/{PUBLIC}", f"/api/models/{PUBLIC}/revision/main",
                f"/api/models/{PUBLIC}/tree/main?recursive=true", f"/api/models/{PUBLIC}/refs",
                f"/api/models/{PUBLIC}/commits/main"):
        r = m.get(api, headers=VALID)
        assert r.status_code == 200, (api, r.status_code, r.text[:200])
    r = m.post(f"/api/models/{PUBLIC}/paths-info/main", data={"paths": "config.json"}, headers=VALID)
    assert r.status_code == 200, r.text[:200]


@pytest.mark.parametrize("fault", sorted(ORIGIN_DOWN))
def test_the_token_never_reaches_a_mirror_when_the_origin_fails(emu_factory, mirror_factory, tmp_path,
                                                                 fault):
    origin, third_party = emu_factory(), emu_factory()
    origin.fault(**ORIGIN_DOWN[fault])
    m = mirror_factory(chain(origin, third_party))
    fetch_public_as_alice(m, origin)
    result = run_client(m.url, tmp_path / "hf", [
        {"op": "download", "repo_id": PUBLIC, "filename": "model.safetensors"},
        {"op": "model_info", "repo_id": PUBLIC}], token="hf_valid_token")
    assert all(r["ok"] for r in result), result
    seen = users_seen(third_party)
    assert seen, "the mirror was never asked: the test proves nothing"
    assert set(seen) == {None}, f"tokens reached the mirror: {seen}"
    # A slow origin is asked once (its circuit opens on that timeout) and records the request
    # only when its delay is over.
    wait_until(lambda: "alice" in users_seen(origin), timeout=10, what="the origin to see alice's token")
    assert third_party.stats()["auth_leaks"] == 0


def test_a_mirror_with_forward_token_gets_the_token(emu_factory, mirror_factory):
    origin, trusted = emu_factory(), emu_factory()
    origin.fault(**ORIGIN_DOWN["status"])
    m = mirror_factory(chain(origin, trusted, forward_token=True))
    r = m.get(f"/api/models/{PUBLIC}/revision/main", headers=VALID)
    assert r.status_code == 200
    r = m.get("/api/whoami-v2", headers=VALID)
    assert r.status_code == 200 and r.json()["name"] == "alice"
    assert set(users_seen(trusted)) == {"alice"}


def test_pass_through_with_a_withheld_token_is_not_answered_by_the_mirror(emu_factory, mirror_factory):
    origin, third_party = emu_factory(), emu_factory()
    origin.fault(**ORIGIN_DOWN["status"])
    m = mirror_factory(chain(origin, third_party))
    # The mirror, never given the token, can only say "authenticate": not alice's answer.
    r = m.get("/api/whoami-v2", headers=VALID)
    assert r.status_code == 502, (r.status_code, r.text[:200])
    assert set(users_seen(third_party)) == {None}


def test_a_gated_repo_never_fails_over_to_a_leaky_mirror(emu_factory, mirror_factory):
    origin, leaky = emu_factory(), emu_factory(extra=("--open-gates",))
    m = mirror_factory(chain(origin, leaky))
    warm_as_alice(m, origin)
    origin.fault(**ORIGIN_DOWN["status"])
    leaky.reset()
    check_isolation(m, origin, "origin down, leaky mirror up")
    # alice is still served, from the cache.
    entry = origin.file(GATED, "main", "model.safetensors")
    r = m.resolve("GET", GATED, "main", "model.safetensors", headers=VALID)
    assert r.status_code == 200 and sha256(r.content) == entry["sha256"]
    asked = [e["path"] for e in leaky.stats()["recent"]
             if "/resolve/" in e["path"] and (GATED in e["path"] or PRIVATE in e["path"])]
    assert not asked, f"protected files asked of the mirror: {asked}"


def test_a_mirror_saying_gated_or_private_protects_a_repo_no_origin_described(emu_factory, mirror_factory):
    origin, leaky = emu_factory(), emu_factory(extra=("--open-gates",))
    origin.fault(**ORIGIN_DOWN["status"])
    m = mirror_factory(chain(origin, leaky))
    bob = {"Authorization": "Bearer hf_other_token"}
    for repo, path, headers, status, code in ((GATED, "model.safetensors", bob, 403, "GatedRepo"),
                                              (GATED, "config.json", {}, 401, "GatedRepo"),
                                              (PRIVATE, "weights.bin", {}, 401, "RepoNotFound"),
                                              (PRIVATE, "config.json", bob, 404, "RepoNotFound")):
        entry = origin.file(repo, "main", path)
        r = m.resolve("GET", repo, "main", path, headers=headers)
        assert (r.status_code, r.headers.get("X-Error-Code")) == (status, code), \
            (repo, path, headers, r.status_code, r.content[:200])
        assert sha256(r.content) != entry["sha256"]


def test_a_mirror_answer_never_makes_a_repo_public(emu_factory, mirror_factory):
    origin, silent = emu_factory(), emu_factory(extra=("--omit-visibility",))
    origin.fault(**ORIGIN_DOWN["status"])
    m = mirror_factory(chain(origin, silent))
    entry = origin.file(PUBLIC, "main", "config.json")
    r = m.resolve("GET", PUBLIC, "main", "config.json")
    assert r.status_code == 200 and sha256(r.content) == entry["sha256"]
    # With every upstream down, only what an origin said is public may come from the cache.
    silent.fault(kind="status", status=503, host="hub")
    r = m.resolve("GET", PUBLIC, "main", "config.json")
    assert r.status_code in (502, 503, 504), (r.status_code, r.content[:200])
    # Once the origin is back and says the repo is public, the cache serves it through outages.
    origin.reset()
    assert m.resolve("GET", PUBLIC, "main", "config.json").status_code == 200
    origin.fault(**ORIGIN_DOWN["status"])
    r = m.resolve("GET", PUBLIC, "main", "config.json")
    assert r.status_code == 200 and sha256(r.content) == entry["sha256"]
