"""Warm downloads with sendfile (issue 11): a GET over plain HTTP/1 for a blob whose pages were
all verified since the file last changed is sent by the kernel straight from the blob file
(`hubcache_sendfile_bytes_total` counts it); everything else takes the normal path. Either way
the client sees the same headers and bytes, keep-alive connections stay usable, and a blob file
changed underneath is never served whole."""

from __future__ import annotations

import hashlib
import http.client
import socket
import time

import pytest

from helpers import MiB, BlobHeader, blob_path, flip_byte, run_client, wait_until, start_raw_get

BIG = ("acme/big-model", "main", "big.bin")
PATH = "/{}/resolve/{}/{}".format(*BIG)
SENT = "hubcache_sendfile_bytes_total"
# Headers that differ from one response to the next whatever the path.
VOLATILE = {"date"}


def warm_mirror(emu_factory, mirror_factory, big_size: int = 8 * MiB, **config):
    """A mirror with big.bin (1 MiB blocks and pages) downloaded, verified, and read once
    more the checked way, so every page is verified: the next GET is sent with sendfile.
    Returns (emu, mirror, content, headers of the checked (normal path) GET)."""
    emu = emu_factory(big_size=big_size)
    config.setdefault("cache", {})
    config["cache"].setdefault("block_size", "1MiB")
    mirror = mirror_factory(emu, **config)
    entry = emu.file(*BIG)
    content = emu.content(entry["sha256"])
    r = mirror.get(PATH)
    assert r.status_code == 200 and r.content == content
    wait_until(lambda: mirror.metric("hubcache_verified_files_total") >= 1, 30,
               what="the completed file to be verified")
    # Pages are remembered as verified only for a file unchanged for 100 ms.
    time.sleep(0.3)
    before = mirror.metric(SENT)
    r = mirror.get(PATH)
    assert r.status_code == 200 and r.content == content
    assert mirror.metric(SENT) == before, "the checked read took the sendfile path"
    return emu, mirror, content, r.headers


def headers_of(response) -> dict:
    return {k.lower(): v for k, v in response.headers.items() if k.lower() not in VOLATILE}


def test_a_warm_get_is_sent_by_the_kernel_with_the_normal_paths_headers(emu_factory, mirror_factory):
    emu, mirror, content, normal = warm_mirror(emu_factory, mirror_factory)
    before = mirror.metric(SENT)
    r = mirror.get(PATH)
    assert r.status_code == 200
    assert hashlib.sha256(r.content).hexdigest() == hashlib.sha256(content).hexdigest()
    # All but the last 1 MiB page went through sendfile.
    assert mirror.metric(SENT) - before == len(content) - MiB
    assert headers_of(r) == {k.lower(): v for k, v in normal.items() if k.lower() not in VOLATILE}
    assert r.headers["content-length"] == str(len(content))
    assert r.headers["connection"].lower() == "keep-alive"
    # The access log counts the bytes sent beside Pingora.
    lines = [l for l in mirror.log_path.read_text(errors="replace").splitlines()
             if " access] GET resolve " in l]
    assert f"bytes={len(content)} " in lines[-1] and "cache=hit" in lines[-1], lines[-1]


@pytest.mark.parametrize("first,last", [
    (0, 0),                          # one byte: within one page, the normal path
    (0, MiB - 1),                    # exactly page 0
    (0, MiB),                        # page 0 and one byte of page 1
    (MiB - 1, MiB),                  # across a page/block boundary, two bytes
    (MiB - 1, 3 * MiB),              # several blocks, ends one byte into a page
    (123_457, 5 * MiB - 2),          # unaligned both ends
    (3 * MiB, None),                 # an open range to the end
    (None, 2 * MiB + 5),             # the last bytes (suffix range)
    (8 * MiB - 2, None),             # the last two bytes
])
def test_ranges_at_page_and_block_boundaries_match_the_content(emu_factory, mirror_factory, first, last):
    _, mirror, content, _ = warm_mirror(emu_factory, mirror_factory)
    size = len(content)
    if first is None:
        spec, start, end = f"bytes=-{last}", size - last, size
    elif last is None:
        spec, start, end = f"bytes={first}-", first, size
    else:
        spec, start, end = f"bytes={first}-{last}", first, last + 1
    before = mirror.metric(SENT)
    r = mirror.get(PATH, headers={"Range": spec})
    assert r.status_code == 206, spec
    assert r.headers["content-range"] == f"bytes {start}-{end - 1}/{size}"
    assert r.headers["content-length"] == str(end - start)
    assert "accept-ranges" not in {k.lower() for k in r.headers}
    assert r.content == content[start:end], spec
    last_page = max(start, (end - 1) // MiB * MiB)
    assert mirror.metric(SENT) - before == last_page - start, spec


def test_two_requests_and_a_head_on_one_keep_alive_connection(emu_factory, mirror_factory):
    _, mirror, content, _ = warm_mirror(emu_factory, mirror_factory)
    before = mirror.metric(SENT)
    conn = http.client.HTTPConnection("127.0.0.1", mirror.port, timeout=30)
    try:
        conn.request("GET", PATH)
        first = conn.getresponse()
        assert first.status == 200 and first.getheader("connection").lower() == "keep-alive"
        assert first.read() == content
        sock = conn.sock
        conn.request("GET", PATH, headers={"Range": "bytes=1000-3000000"})
        second = conn.getresponse()
        assert second.status == 206 and second.read() == content[1000:3000001]
        conn.request("HEAD", PATH)
        head = conn.getresponse()
        assert head.status == 200 and head.getheader("content-length") == str(len(content))
        assert head.read() == b""
        conn.request("GET", PATH, headers={"Range": "bytes=0-9"})
        third = conn.getresponse()
        assert third.status == 206 and third.read() == content[:10]
        assert conn.sock is sock, "the connection was not kept"
    finally:
        conn.close()
    assert mirror.metric(SENT) - before == (len(content) - MiB) + (2 * MiB - 1000)


def test_head_and_conditional_requests_take_the_normal_path(emu_factory, mirror_factory):
    _, mirror, content, normal = warm_mirror(emu_factory, mirror_factory)
    etag = normal["etag"]
    before = mirror.metric(SENT)
    head = mirror.head(PATH)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(content))
    assert mirror.get(PATH, headers={"If-None-Match": etag}).status_code == 304
    r = mirror.get(PATH, headers={"Range": "bytes=100-2999999", "If-Range": etag})
    assert r.status_code == 206 and r.content == content[100:3000000]
    r = mirror.get(PATH, headers={"Range": "bytes=100-2999999", "If-Range": '"other"'})
    assert r.status_code == 200 and r.content == content
    r = mirror.get(PATH, headers={"Range": "bytes=0-1,5000000-5000001"})
    assert r.status_code == 206 and "multipart/byteranges" in r.headers["content-type"]
    assert mirror.metric(SENT) == before


def test_sendfile_off_serves_everything_the_normal_way(emu_factory, mirror_factory):
    _, mirror, content, _ = warm_mirror(emu_factory, mirror_factory, server={"sendfile": False})
    r = mirror.get(PATH)
    assert r.status_code == 200 and r.content == content
    assert mirror.metric(SENT) == 0


def test_a_byte_flipped_before_the_request_is_refetched_not_sent(emu_factory, mirror_factory):
    _, mirror, content, _ = warm_mirror(emu_factory, mirror_factory)
    path = blob_path(mirror.cache_dir, hashlib.sha256(content).hexdigest())
    h = BlobHeader(path)
    flip_byte(path, h.data_offset + 3 * MiB + 777)           # the write moves the file's ctime
    before = mirror.metric(SENT)
    r = mirror.get(PATH)
    assert r.status_code == 200 and r.content == content
    assert mirror.metric(SENT) == before, "sent from a file changed since its pages were verified"
    assert mirror.metric("hubcache_corrupt_blocks_total") >= 1


def read_exactly(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        part = sock.recv(min(1 << 20, n - len(out)))
        if not part:
            break
        out += part
    return bytes(out)


def test_a_byte_flipped_during_the_transfer_cuts_the_response_short(emu_factory, mirror_factory):
    """The client reads 1 MiB, stops, the blob file changes far ahead of what the socket
    buffers can hold: the rest is never sent, so the client sees a short body, not a whole
    one with a wrong byte. The next download is byte-exact."""
    size = 64 * MiB
    _, mirror, content, _ = warm_mirror(emu_factory, mirror_factory, big_size=size)
    path = blob_path(mirror.cache_dir, hashlib.sha256(content).hexdigest())
    h = BlobHeader(path)
    before = mirror.metric(SENT)
    sock = start_raw_get(mirror, PATH)
    try:
        body = read_exactly(sock, MiB)
        time.sleep(0.3)
        flip_byte(path, h.data_offset + 60 * MiB + 5)
        body += read_exactly(sock, size)                      # until the mirror closes
    finally:
        sock.close()
    assert len(body) < size, "a whole body was sent from a file changed during the transfer"
    assert body == content[:len(body)], "a changed byte was sent"
    assert mirror.metric(SENT) > before
    # Its access-log line counts the bytes handed to the socket before it broke off.
    cut = [l for l in mirror.log_path.read_text(errors="replace").splitlines()
           if " access] GET resolve " in l and "changed while being sent" in l]
    assert len(cut) == 1, cut
    logged = int(cut[0].split(" bytes=", 1)[1].split(" ", 1)[0])
    assert len(body) <= logged < size, cut[0]
    r = mirror.get(PATH)
    assert r.status_code == 200 and r.content == content


def test_a_file_whose_header_changes_during_the_transfer_is_still_sent_whole(
        emu_factory, mirror_factory):
    """Only the file's status changes mid-transfer (a chmod moves its ctime, as another process
    marking the blob verified does): the bytes already sent are checked again, the rest goes
    the checked way, and the client gets the whole file byte-exact (a CI run of two processes
    on one cache cut such a download short)."""
    size = 64 * MiB
    _, mirror, content, _ = warm_mirror(emu_factory, mirror_factory, big_size=size)
    path = blob_path(mirror.cache_dir, hashlib.sha256(content).hexdigest())
    before = mirror.metric(SENT)
    sock = start_raw_get(mirror, PATH)
    try:
        body = read_exactly(sock, MiB)
        time.sleep(0.3)
        mode = path.stat().st_mode
        path.chmod(mode ^ 0o004)
        path.chmod(mode)
        body += read_exactly(sock, size - MiB)
    finally:
        sock.close()
    assert len(body) == size and body == content, "the download was cut or changed"
    sent_by_kernel = mirror.metric(SENT) - before
    assert 0 < sent_by_kernel < size, "the rest should have gone the checked way"
    assert not [l for l in mirror.log_path.read_text(errors="replace").splitlines()
                if "changed while being sent" in l]


def test_huggingface_hub_downloads_a_warm_file_byte_exact(emu_factory, mirror_factory, hf_home):
    _, mirror, content, _ = warm_mirror(emu_factory, mirror_factory)
    before = mirror.metric(SENT)
    [result] = run_client(mirror.url, hf_home, [{"op": "download", "repo_id": BIG[0],
                                                 "filename": BIG[2], "revision": BIG[1]}])
    assert result["ok"], result
    assert result["sha256"] == hashlib.sha256(content).hexdigest()
    assert result["size"] == len(content)
    assert mirror.metric(SENT) - before == len(content) - MiB


def test_a_client_leaving_mid_transfer_is_logged_once_not_as_an_error(emu_factory, mirror_factory):
    size = 64 * MiB
    _, mirror, content, _ = warm_mirror(emu_factory, mirror_factory, big_size=size)
    before = mirror.metric(SENT)
    sock = socket.create_connection(("127.0.0.1", mirror.port), timeout=30)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
    sock.sendall(f"GET {PATH} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert len(read_exactly(sock, 2 * MiB)) == 2 * MiB
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()                                               # a reset, mid-transfer
    wait_until(lambda: any(" access] GET resolve " in l and "error=" in l
                           for l in mirror.log_path.read_text(errors="replace").splitlines()),
               10, what="the aborted download's access line")
    log = mirror.log_path.read_text(errors="replace")
    assert "ERROR" not in log, [l for l in log.splitlines() if "ERROR" in l]
    assert mirror.metric(SENT) > before
    r = mirror.get(PATH)
    assert r.status_code == 200 and r.content == content
