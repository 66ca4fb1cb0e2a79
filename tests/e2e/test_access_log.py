"""One access-log line per request (issue 12): method, route, repo, path, status, bytes,
duration, cache outcome and upstream, as text or as JSON (`log.format`), and never a token or a
signed URL's signature."""

from __future__ import annotations

import json
import re

from helpers import VALID, stream_sha256, wait_until

GATED = ("acme/gated-model", "main", "model.safetensors")
TEXT_LINE = re.compile(
    r"^\[(?P<ts>\S+) INFO  access\] (?P<method>\S+) (?P<route>\S+) (?P<repo>\S+) (?P<path>\S+) "
    r"(?P<status>\d+) bytes=(?P<bytes>\d+) ms=(?P<ms>[\d.]+) cache=(?P<cache>\S+) "
    r"upstream=(?P<upstream>\S+)(?: error=(?P<error>.*))?$")


def access_lines(log: str) -> list[dict]:
    return [m.groupdict() for m in map(TEXT_LINE.match, log.splitlines()) if m]


def wait_for_lines(mirror, count: int, parse=access_lines) -> list:
    """The access lines once there are `count` (a request's line is written after its answer)."""
    return wait_until(lambda: (lambda got: got if len(got) >= count else None)(
        parse(mirror.log_path.read_text(errors="replace"))), 10, what=f"{count} access lines")


def test_text_access_lines_name_route_repo_outcome_and_upstream(own_emu, mirror_factory):
    m = mirror_factory(own_emu)
    entry = own_emu.file(*GATED)
    url = m.url + "/{}/resolve/{}/{}".format(*GATED)
    assert stream_sha256(url, headers=VALID) == (200, entry["sha256"], entry["size"])
    assert stream_sha256(url, headers=VALID)[0] == 200
    assert m.head("/{}/resolve/{}/{}".format(*GATED), headers=VALID).status_code == 200
    assert m.get("/api/models/acme/tiny-model").status_code == 200
    assert m.get("/api/whoami-v2", headers=VALID).status_code == 200          # passed through
    assert m.get("/acme/tiny-model/resolve/main/no-such-file").status_code == 404
    lines = wait_for_lines(m, 6)
    assert len(lines) == 6, lines
    cold, warm, head, info, whoami, missing = lines
    assert (cold["method"], cold["route"], cold["repo"], cold["status"]) == \
        ("GET", "resolve", "models/acme/gated-model", "200")
    assert cold["path"] == "/acme/gated-model/resolve/main/model.safetensors"
    assert int(cold["bytes"]) == entry["size"] and float(cold["ms"]) > 0
    assert (cold["cache"], cold["upstream"]) == ("miss", own_emu.hub)
    assert (warm["cache"], warm["upstream"], int(warm["bytes"])) == ("hit", "-", entry["size"])
    assert (head["method"], head["cache"], head["bytes"]) == ("HEAD", "-", "0")
    assert (info["route"], info["repo"], info["status"]) == ("repo_info", "models/acme/tiny-model", "200")
    assert (whoami["route"], whoami["repo"], whoami["cache"], whoami["upstream"]) == \
        ("other", "-", "pass", own_emu.hub)
    assert missing["status"] == "404"


def test_json_access_lines_are_objects_with_every_field(own_emu, mirror_factory):
    m = mirror_factory(own_emu, log={"format": "json"})
    assert m.get("/acme/tiny-model/resolve/main/config.json").status_code == 200
    assert m.get("/api/models/acme/tiny-model/tree/main?recursive=true&expand=false").status_code == 200

    def parse(log: str) -> list[dict]:
        records = []
        for line in log.splitlines():
            if not line or line.startswith("====="):
                continue
            record = json.loads(line)            # every line is JSON, messages and requests alike
            assert {"ts", "level", "target"} <= record.keys(), record
            if record["target"] == "access":
                records.append(record)
            else:
                assert "msg" in record
        return records

    records = wait_for_lines(m, 2, parse)
    assert len(records) == 2, records
    file, tree = records
    assert {k: file[k] for k in ("method", "route", "repo", "path", "status", "cache")} == {
        "method": "GET", "route": "resolve", "repo": "models/acme/tiny-model",
        "path": "/acme/tiny-model/resolve/main/config.json", "status": 200, "cache": "miss"}
    assert file["bytes"] == len(own_emu.file_bytes("acme/tiny-model", "main", "config.json"))
    assert file["duration_ms"] >= 0 and file["upstream"] == own_emu.hub
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", file["ts"])
    # Query values are left out of the log; their names are kept.
    assert tree["path"] == "/api/models/acme/tiny-model/tree/main?recursive&expand"
    assert tree["route"] == "tree" and tree["status"] == 200


def test_the_log_never_shows_a_token_or_a_signed_url_even_at_debug(own_emu, mirror_factory):
    m = mirror_factory(own_emu, log={"level": "debug"})
    entry = own_emu.file(*GATED)
    url = m.url + "/{}/resolve/{}/{}".format(*GATED)
    assert stream_sha256(url, headers=VALID) == (200, entry["sha256"], entry["size"])
    # A client putting a token or a signature in a query does not get it logged either.
    m.get("/api/models?search=tiny&token=hf_valid_token&Signature=abc123sig", headers=VALID)
    signed = re.search(rf"cdn GET \S*{entry['sha256']}\?\S*Signature=([0-9a-f]+)",
                       own_emu.log_path.read_text(errors="replace"))
    assert signed, "the download did not go through a signed CDN redirect: the test proves nothing"
    signature = signed.group(1)
    wait_for_lines(m, 2)
    log = m.log_path.read_text(errors="replace")
    for secret in ("hf_valid_token", "Bearer", signature, "Signature=", "Expires=", "abc123sig"):
        assert secret not in log, f"the mirror log shows {secret!r}"
