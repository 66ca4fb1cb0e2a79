"""A 60-second soak inside the suite (scripts/soak runs the 10-minute one): 1000 concurrent
keep-alive connections on loopback against a fresh mirror, mixing warm and cold files, ranges,
HEAD, API routes, the root page and aborted downloads. Every answer must be right, RSS must stay
under 100 MiB and flat, and once the clients are gone the mirror must hold none of their
descriptors and no more files than before."""

from __future__ import annotations

from helpers import MiB
import soak

CONNECTIONS = 1000
DURATION = 60


def test_soak_1000_keep_alive_connections_for_60_seconds(emu_factory, mirror_factory):
    needed = CONNECTIONS * 2 + 1024
    limit = soak.raise_nofile(needed)
    assert limit >= needed, (f"the open-file limit is {limit} and cannot be raised to {needed}: "
                             f"raise the hard limit (ulimit -Hn) for this test")
    emu = emu_factory(big_size=64 * MiB)
    mirror = mirror_factory(emu)
    report = soak.run(mirror, emu, connections=CONNECTIONS, duration=DURATION,
                      think=(2.0, 8.0), ramp=10.0)
    summary = report.summary()
    print(summary)
    assert mirror.running, summary
    assert report.stats.open_peak >= CONNECTIONS * 0.95, summary
    assert report.requests >= CONNECTIONS * 3, summary
    assert report.error_count == 0, summary
    assert report.final_rss < 100, summary
    assert report.rss_growth_second_half() < 24, summary
    before, after = report.fds_before, report.fds_after
    assert after["client"] == 0, summary
    assert after["file"] <= before["file"], summary
    assert after["other"] <= before["other"], summary
