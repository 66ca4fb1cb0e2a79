"""The metadata layout gives every repo its own directory (`{type}/{org or -}/{name}`), and a
cache written with the older layout (one-segment repos directly under their type, where org
directories also live) is taken over: it keeps serving, offline too, without wrong data."""

from __future__ import annotations

import shutil

from helpers import sha256

ONE = "tinyllama"               # a one-segment repo id


def test_a_cache_in_the_old_layout_keeps_serving_after_the_upgrade(own_emu, mirror_factory, tmp_path):
    cache = tmp_path / "old-layout-cache"
    m = mirror_factory(own_emu, cache_dir=cache)
    for path in ("config.json", "model.bin"):
        r = m.resolve("GET", ONE, "main", path)
        assert r.status_code == 200 and sha256(r.content) == own_emu.file(ONE, "main", path)["sha256"]
    assert m.get(f"/api/models/{ONE}/revision/main").status_code == 200
    r = m.resolve("GET", "acme/tiny-model", "main", "config.json")
    assert r.status_code == 200
    m.stop()

    # Rewrite the metadata as the previous release laid it out.
    models = cache / "meta" / "models"
    new_home = models / "-" / ONE
    assert (new_home / "refs.json").is_file(), sorted(p.name for p in models.iterdir())
    old_home = models / ONE
    shutil.move(str(new_home), str(old_home))
    (models / "-").rmdir()
    (cache / "meta" / "layout-v2").unlink()

    m.start(offline=True)
    for path in ("config.json", "model.bin"):
        r = m.resolve("GET", ONE, "main", path)
        assert r.status_code == 200, (path, r.status_code, dict(r.headers))
        assert sha256(r.content) == own_emu.file(ONE, "main", path)["sha256"]
    info = m.get(f"/api/models/{ONE}/revision/main")
    assert info.status_code == 200 and info.json()["sha"] == own_emu.commit(ONE, "main")
    assert m.resolve("GET", "acme/tiny-model", "main", "config.json").status_code == 200
    # Moved, not copied: the one-segment repo no longer sits where org directories live.
    assert (new_home / "refs.json").is_file() and not old_home.exists()
    # And a two-segment repo named like its pieces is a stranger to it.
    r = m.get(f"/api/models/{ONE}/commits")
    assert r.status_code in (401, 404) and r.headers.get("X-Error-Code") == "RepoNotFound", r.status_code
