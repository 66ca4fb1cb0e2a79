"""Cold downloads with sendfile (issue 11): a plain-HTTP/1 GET of a file the mirror is filling
into a blob file it created (and nobody else has changed) is sent by the kernel from that file
as the fill writes it (`hubcache_sendfile_bytes_total` counts it), all but the range's last
page, which is read and sent once the client acknowledged the rest and the file was found
unchanged by anyone else. Clients see the normal path's headers and bytes; a file changed
underneath is never served whole with a wrong byte."""

from __future__ import annotations

import concurrent.futures
import hashlib
import socket
import time

import pytest
import requests

from helpers import MiB, BlobHeader, blob_path, flip_byte, wait_until, start_raw_get

BIG = ("acme/big-model", "main", "big.bin")
PATH = "/{}/resolve/{}/{}".format(*BIG)
SENT = "hubcache_sendfile_bytes_total"
# Headers that differ from one response to the next whatever the path.
VOLATILE = {"date"}


def cold_mirror(emu_factory, mirror_factory, big_size: int = 8 * MiB, rate: int = 0, **config):
    """An emulator with big.bin (optionally a CDN limited to `rate` bytes/s per connection)
    and a mirror on an empty cache with 1 MiB blocks and pages. Returns (mirror, content)."""
    emu = emu_factory(big_size=big_size, extra=("--cdn-rate", str(rate)) if rate else ())
    config.setdefault("cache", {})
    config["cache"].setdefault("block_size", "1MiB")
    mirror = mirror_factory(emu, **config)
    content = emu.content(emu.file(*BIG)["sha256"])
    return mirror, content


def headers_of(response) -> dict:
    return {k.lower(): v for k, v in response.headers.items() if k.lower() not in VOLATILE}


def test_a_cold_get_is_sent_by_the_kernel_with_the_normal_paths_headers(
        emu_factory, mirror_factory):
    mirror, content = cold_mirror(emu_factory, mirror_factory)
    r = mirror.get(PATH)
    assert r.status_code == 200
    assert hashlib.sha256(r.content).digest() == hashlib.sha256(content).digest()
    # Committed blocks went through sendfile (blocks still in flight were read); never the
    # last page.
    assert mirror.metric(SENT) <= len(content) - MiB
    lines = [l for l in mirror.log_path.read_text(errors="replace").splitlines()
             if " access] GET resolve " in l]
    assert f"bytes={len(content)} " in lines[-1] and "cache=miss" in lines[-1], lines[-1]
    # The same cold download through a mirror without sendfile: the same headers.
    normal_mirror, _ = cold_mirror(emu_factory, mirror_factory, server={"sendfile": False})
    normal = normal_mirror.get(PATH)
    assert normal.status_code == 200 and normal.content == content
    assert normal_mirror.metric(SENT) == 0
    assert headers_of(r) == headers_of(normal)


@pytest.mark.parametrize("first,last", [
    (0, MiB),                        # page 0 and one byte of page 1
    (MiB - 1, 3 * MiB),              # several blocks, ends one byte into a page
    (123_457, 5 * MiB - 2),          # unaligned both ends
    (None, 2 * MiB + 5),             # the last bytes (suffix range)
])
def test_cold_ranges_are_sent_by_the_kernel_byte_exact(emu_factory, mirror_factory, first, last):
    mirror, content = cold_mirror(emu_factory, mirror_factory)
    size = len(content)
    if first is None:
        spec, start, end = f"bytes=-{last}", size - last, size
    else:
        spec, start, end = f"bytes={first}-{last}", first, last + 1
    r = mirror.get(PATH, headers={"Range": spec})
    assert r.status_code == 206, spec
    assert r.headers["content-range"] == f"bytes {start}-{end - 1}/{size}"
    assert r.content == content[start:end], spec
    last_page = max(start, (end - 1) // MiB * MiB)
    assert mirror.metric(SENT) <= last_page - start, spec


def test_committed_blocks_go_to_the_kernel_the_last_page_and_blocks_in_flight_do_not(
        emu_factory, mirror_factory):
    """The client reads the header, then nothing until the fill has committed every block:
    what the mirror handed the socket meanwhile (at most its buffers) may come from blocks in
    flight; everything after that comes from committed blocks, by the kernel."""
    size = 24 * MiB
    mirror, content = cold_mirror(emu_factory, mirror_factory, big_size=size, rate=32 * MiB)
    path = blob_path(mirror.cache_dir, hashlib.sha256(content).hexdigest())
    sock = start_raw_get(mirror, PATH)
    try:
        wait_until(lambda: BlobHeader(path).complete, 60, what="every block on disk")
        body = read_until_closed(sock, size)
    finally:
        sock.close()
    assert body == content
    sent = mirror.metric(SENT)
    assert size - MiB - 8 * MiB <= sent <= size - MiB, sent


def test_sixteen_cold_clients_over_a_slow_cdn_get_the_same_bytes(emu_factory, mirror_factory):
    mirror, content = cold_mirror(emu_factory, mirror_factory, big_size=24 * MiB,
                                  rate=8 * MiB)
    digest = hashlib.sha256(content).hexdigest()

    def download(_):
        r = requests.get(mirror.url + PATH, timeout=120)
        return r.status_code, hashlib.sha256(r.content).hexdigest()

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(download, range(16)))
    assert results == [(200, digest)] * 16
    assert mirror.metric(SENT) > 0


def read_until_closed(sock: socket.socket, limit: int) -> bytes:
    out = bytearray()
    while len(out) < limit:
        part = sock.recv(1 << 20)
        if not part:
            break
        out += part
    return bytes(out)


def test_a_byte_flipped_in_what_the_kernel_sent_cuts_the_response_short(
        emu_factory, mirror_factory):
    """The first pages went to the kernel; the client has not read them yet when a byte of
    page 0 changes in the blob file (not by the mirror): the file is no longer the fill's own,
    what was sent no longer matches its checksums, so the last page is never sent. The client
    sees a short body, never a whole one; the next download is byte-exact."""
    size = 16 * MiB
    mirror, content = cold_mirror(emu_factory, mirror_factory, big_size=size, rate=4 * MiB)
    path = blob_path(mirror.cache_dir, hashlib.sha256(content).hexdigest())
    sock = start_raw_get(mirror, PATH)
    try:
        wait_until(lambda: mirror.metric(SENT) > 0, 30, what="the first pages sent by the kernel")
        flip_byte(path, BlobHeader(path).data_offset + 100)
        body = read_until_closed(sock, size)
    finally:
        sock.close()
    assert len(body) < size, "a whole body was sent from a file changed during the transfer"
    cut = [l for l in mirror.log_path.read_text(errors="replace").splitlines()
           if " access] GET resolve " in l and "changed while being sent" in l]
    assert len(cut) == 1, cut
    r = mirror.get(PATH)
    assert r.status_code == 200 and r.content == content


def test_a_byte_flipped_ahead_of_the_client_is_never_sent(emu_factory, mirror_factory):
    """A block the fill committed changes on disk before the client gets to it: the file is
    no longer the fill's own, so its bytes are read the checked way from then on, and the bad
    block is invalidated and fetched again. Invalidated and rewritten blocks could hide what
    the kernel already sent, so the response is cut short: the client gets a correct prefix,
    never a wrong byte, and the next download is byte-exact."""
    size = 32 * MiB
    mirror, content = cold_mirror(emu_factory, mirror_factory, big_size=size, rate=16 * MiB)
    path = blob_path(mirror.cache_dir, hashlib.sha256(content).hexdigest())
    sock = start_raw_get(mirror, PATH)
    try:
        body = read_until_closed(sock, MiB)
        # The client stopped after 1 MiB; the fill goes on. Once block 30 is on disk, corrupt it.
        wait_until(lambda: 30 in BlobHeader(path).present, 60, what="block 30 on disk")
        flip_byte(path, BlobHeader(path).data_offset + 30 * MiB + 5)
        time.sleep(0.1)
        body += read_until_closed(sock, size - len(body))
    finally:
        sock.close()
    assert len(body) < size, "a whole body was sent from a file changed during the transfer"
    assert body == content[:len(body)], "a changed byte was sent"
    log = mirror.log_path.read_text(errors="replace")
    assert "block 30 is corrupt" in log
    assert "a block was invalidated and fetched again" in log
    r = mirror.get(PATH)
    assert r.status_code == 200 and r.content == content
