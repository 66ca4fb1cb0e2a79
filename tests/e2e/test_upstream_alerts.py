"""Upstream outages reach the alert plugins (issues 7 and 8): the upstream chain's state
changes go through the cache service to every configured sink, one `upstream_down` per sink for
an outage and one `upstream_recovered` when the probes bring the upstream back; with every
upstream down, `all_upstreams_down` and its recovery as well. DingoSpeed alerts only on a proxy
probe to an unrelated site; these come from the requests and probes hubcache itself makes."""

from __future__ import annotations

import time

import pytest

from evict_helpers import Receiver, webhook

EVENTS = ["upstream_down", "upstream_recovered", "all_upstreams_down", "all_upstreams_recovered"]


@pytest.fixture
def sinks():
    started: list[Receiver] = []
    yield started
    for r in started:
        r.stop()


def test_an_outage_gives_one_down_and_one_recovered_per_sink(own_emu, mirror_factory, sinks):
    first, second = Receiver(), Receiver()
    sinks.extend([first, second])
    health = {"fail_after": 1, "probe_every": "300ms", "recover_after": 2}
    mirror = mirror_factory(
        [{"url": own_emu.hub, "timeout": "3s", "health": health}],
        plugins={"alerts": [webhook(first.url, name="ops", events=EVENTS),
                            webhook(second.url, name="oncall", events=EVENTS)]})
    assert mirror.resolve("HEAD", "acme/tiny-model", "main", "config.json").status_code == 200

    own_emu.stop()
    # A request finds the only upstream gone: its circuit opens, and the chain is all down.
    r = mirror.resolve("HEAD", "acme/tiny-model", "refs/pr/1", "config.json")
    assert r.status_code >= 500, r.status_code
    for sink in (first, second):
        [down] = sink.wait_for("upstream_down", timeout=30)
        assert down["subject"].startswith(own_emu.hub.rstrip("/")), down
        sink.wait_for("all_upstreams_down", timeout=30)

    own_emu.start(same_ports=True)
    for sink in (first, second):
        [recovered] = sink.wait_for("upstream_recovered", timeout=30)
        assert recovered["subject"] == sink.events("upstream_down")[0]["subject"]
        sink.wait_for("all_upstreams_recovered", timeout=30)
    assert mirror.resolve("HEAD", "acme/tiny-model", "main", "config.json").status_code == 200
    # The probes keep passing and requests succeed: no second incident, no repeated recovery.
    time.sleep(2)
    for sink in (first, second):
        assert len(sink.events("upstream_down")) == 1, sink.events()
        assert len(sink.events("upstream_recovered")) == 1, sink.events()
