"""Cache isolation for gated and private repos: cached bytes go only to authorised tokens,
online, with the upstream stopped, and after a restart in offline mode."""

from __future__ import annotations

from helpers import OTHER, VALID, sha256

GATED = "acme/gated-model"
PRIVATE = "acme/private-model"


def assert_denied(r, statuses: tuple, code: str, entry: dict | None = None) -> None:
    assert r.status_code in statuses, (r.status_code, dict(r.headers), r.content[:200])
    assert r.headers.get("X-Error-Code") == code, dict(r.headers)
    if entry is not None and entry["size"] > 64:
        assert sha256(r.content) != entry["sha256"]
        assert len(r.content) < entry["size"], "file bytes were sent to an unauthorised client"


def check_isolation(m, emu, phase: str) -> None:
    failures = []
    for path in ("config.json", "model.safetensors"):
        entry = emu.file(GATED, "main", path)
        for method in ("GET", "HEAD"):
            for who, headers, statuses in (("anonymous", {}, (401,)), ("hf_other_token", OTHER, (403,))):
                r = m.resolve(method, GATED, "main", path, headers=headers)
                try:
                    assert_denied(r, statuses, "GatedRepo", entry if method == "GET" else None)
                except AssertionError as err:
                    failures.append(f"[{phase}] {method} {GATED}/{path} as {who}: {err}")
    for path in ("config.json", "weights.bin"):
        entry = emu.file(PRIVATE, "main", path)
        for who, headers in (("anonymous", {}), ("hf_other_token", OTHER)):
            r = m.resolve("GET", PRIVATE, "main", path, headers=headers)
            try:
                assert_denied(r, (401, 403, 404), "RepoNotFound", entry)
            except AssertionError as err:
                failures.append(f"[{phase}] GET {PRIVATE}/{path} as {who}: {err}")
    for who, headers in (("anonymous", {}), ("hf_other_token", OTHER)):
        for api in (f"/api/models/{PRIVATE}", f"/api/models/{PRIVATE}/revision/main",
                    f"/api/models/{PRIVATE}/tree/main"):
            r = m.get(api, headers=headers)
            if r.status_code == 200 or "weights.bin" in r.text:
                failures.append(f"[{phase}] {api} as {who}: private metadata served ({r.status_code})")
    assert not failures, "\n".join(failures)


def warm_as_alice(m, emu) -> None:
    for repo, paths in ((GATED, ("config.json", "model.safetensors")), (PRIVATE, ("config.json", "weights.bin"))):
        for path in paths:
            r = m.resolve("GET", repo, "main", path, headers=VALID)
            assert r.status_code == 200, (repo, path, r.status_code, dict(r.headers))
            assert sha256(r.content) == emu.file(repo, "main", path)["sha256"]
        for api in (f"/api/models/{repo}", f"/api/models/{repo}/revision/main", f"/api/models/{repo}/tree/main"):
            assert m.get(api, headers=VALID).status_code == 200, api


def test_gated_and_private_cache_isolation_online(own_emu, mirror_factory):
    m = mirror_factory(own_emu)
    warm_as_alice(m, own_emu)
    check_isolation(m, own_emu, "online, after an authorised download")
    # alice still gets her bytes (from cache)
    r = m.resolve("GET", GATED, "main", "model.safetensors", headers=VALID)
    assert r.status_code == 200 and sha256(r.content) == own_emu.file(GATED, "main", "model.safetensors")["sha256"]
    assert own_emu.stats()["auth_leaks"] == 0


def test_gated_and_private_cache_isolation_with_upstream_stopped(own_emu, mirror_factory):
    m = mirror_factory(own_emu)
    warm_as_alice(m, own_emu)
    check_isolation(m, own_emu, "online")         # bob and anonymous were seen (and denied) online
    own_emu.stop()
    check_isolation(m, own_emu, "upstream stopped")


def test_gated_and_private_cache_isolation_offline_restart(own_emu, mirror_factory):
    m = mirror_factory(own_emu)
    warm_as_alice(m, own_emu)
    m.restart(offline=True)
    own_emu.reset()
    check_isolation(m, own_emu, "offline restart")
    assert own_emu.stats()["requests"] == 0, "an offline mirror contacted the upstream"


def test_authorised_token_is_remembered_offline(own_emu, mirror_factory):
    """docs/protocol.md: a grant is stored (hashed) on disk, so an offline restart keeps it."""
    m = mirror_factory(own_emu)
    warm_as_alice(m, own_emu)
    m.restart(offline=True)
    for path in ("config.json", "model.safetensors"):
        r = m.resolve("GET", GATED, "main", path, headers=VALID)
        assert r.status_code == 200, (path, r.status_code, dict(r.headers))
        assert sha256(r.content) == own_emu.file(GATED, "main", path)["sha256"]


def test_gated_denials_when_only_metadata_is_cached(own_emu, mirror_factory):
    """alice's HEADs make the mirror learn the files' metadata without their bytes; a later
    anonymous or unauthorised GET must get the upstream's GatedRepo answer (not a gateway error
    from a refused fill, and never bytes)."""
    m = mirror_factory(own_emu)
    for path in ("config.json", "model.safetensors"):
        assert m.resolve("HEAD", GATED, "main", path, headers=VALID).status_code == 200
    failures = []
    for path in ("config.json", "model.safetensors"):
        entry = own_emu.file(GATED, "main", path)
        for who, headers, status in (("anonymous", {}, 401), ("hf_other_token", OTHER, 403)):
            r = m.resolve("GET", GATED, "main", path, headers=headers)
            try:
                assert_denied(r, (status,), "GatedRepo", entry)
            except AssertionError as err:
                failures.append(f"GET {path} as {who}: {err}")
    assert not failures, "\n".join(failures)
    assert own_emu.stats()["auth_leaks"] == 0
