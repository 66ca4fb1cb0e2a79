"""`plugins:` in the config: `check-config` and `serve` refuse bad eviction and alert settings,
naming the key and the reason, and never print a webhook URL or secret."""

from __future__ import annotations

import os
import subprocess

import pytest

from helpers import free_port

INVALID = [
    # (name, YAML, text that must appear in the message)
    ("unknown policy", "plugins:\n  eviction:\n    policy: random\n",
     'plugins.eviction.policy: unknown kind "random" (known: fifo, large_first, lfuda, lru)'),
    ("unknown sink kind", "plugins:\n  alerts:\n    - kind: pagerduty\n",
     'plugins.alerts[0].kind: unknown kind "pagerduty"'),
    ("low watermark at high", "plugins:\n  eviction: {high_watermark: 80%, low_watermark: 80%}\n",
     "plugins.eviction.low_watermark: 80% is not below plugins.eviction.high_watermark (80%)"),
    ("share over 100%", "plugins:\n  eviction: {high_watermark: 150%}\n",
     "plugins.eviction.high_watermark: 150% is over 100%"),
    ("share without %", "plugins:\n  eviction: {low_watermark: 80}\n",
     "plugins.eviction.low_watermark"),
    ("non-http url", "plugins:\n  alerts:\n    - {kind: webhook, url: 'ftp://ops.example/hook'}\n",
     'plugins.alerts[0].url: scheme "ftp" is not supported (use http or https)'),
    ("webhook without url", "plugins:\n  alerts:\n    - {kind: webhook}\n",
     "plugins.alerts[0].url: is required"),
    ("unknown event", "plugins:\n  alerts:\n    - {kind: log, events: [upstream_dwn]}\n",
     'plugins.alerts[0].events[0]: unknown event "upstream_dwn"'),
    ("bad wecom msgtype", "plugins:\n  alerts:\n    - {kind: wecom, url: abc-123, msgtype: html}\n",
     'plugins.alerts[0].msgtype: "html" is not one of: markdown, text'),
    ("unknown option of a kind", "plugins:\n  alerts:\n    - {kind: slack, url: 'https://h/x', channel: ops}\n",
     "plugins.alerts[0].channel: unknown key"),
    ("missing env variable", "plugins:\n  alerts:\n    - {kind: slack, url: '${HUBCACHE_E2E_UNSET_HOOK}'}\n",
     "plugins.alerts[0].url: environment variable HUBCACHE_E2E_UNSET_HOOK is not set"),
    ("bad pin", "plugins:\n  eviction: {pin: [llama]}\n", "plugins.eviction.pin[0]"),
]


def check_config(hubcache_bin, path, env=None):
    return subprocess.run([hubcache_bin, "check-config", str(path)], capture_output=True, text=True,
                          timeout=30, env=env)


@pytest.mark.parametrize("name,text,needle", INVALID, ids=[c[0] for c in INVALID])
def test_check_config_rejects_bad_plugin_settings_naming_key_and_reason(hubcache_bin, tmp_path, name,
                                                                       text, needle):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    p = check_config(hubcache_bin, cfg)
    out = p.stdout + p.stderr
    assert p.returncode != 0, f"accepted an invalid config ({name}): {out}"
    assert needle in out, f"message does not say {needle!r}: {out}"
    assert str(cfg) in out, out
    assert "panicked" not in out


def test_check_config_accepts_a_full_plugins_section_with_env_variables(hubcache_bin, tmp_path):
    cfg = tmp_path / "ok.yaml"
    cfg.write_text("""\
plugins:
  eviction:
    policy: lfuda
    max_size: 500GiB
    high_watermark: 90%
    low_watermark: 80%
    max_idle: 30d
    min_age: 10m
    pin: ["meta-llama/*", "datasets/acme/eval"]
  alerts:
    - kind: webhook
      url: ${HUBCACHE_E2E_HOOK}
      secret: ${HUBCACHE_E2E_SECRET}
      format: alertmanager
      events: [upstream_down, upstream_recovered]
    - kind: wecom
      url: ${HUBCACHE_E2E_WECOM_KEY}
      msgtype: text
      mentioned_list: ["@all"]
    - kind: slack
      url: https://hooks.slack.com/services/T0/B0/xyz
      repeat_every: 4h
    - kind: log
      level: error
""")
    env = dict(os.environ, HUBCACHE_E2E_HOOK="https://ops.example/hook",
               HUBCACHE_E2E_SECRET="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
               HUBCACHE_E2E_WECOM_KEY="693a91f6-7aoc-4bc4-97a0-0ec2sifa5aaa")
    p = check_config(hubcache_bin, cfg, env)
    assert p.returncode == 0, p.stdout + p.stderr


def test_errors_about_alert_urls_and_secrets_never_print_them(hubcache_bin, tmp_path):
    cases = [
        "plugins:\n  alerts:\n    - {kind: slack, url: 'ftp://hooks.slack.com/services/SECRETPATH'}\n",
        "plugins:\n  alerts:\n    - {kind: webhook, url: 'https://h/SECRETPATH', secret: 'whsec_SECRET!!'}\n",
        "plugins:\n  alerts:\n    - {kind: wecom, url: 'https://qyapi.weixin.qq.com/send?SECRETKEY'}\n",
        "plugins:\n  alerts:\n    - {kind: wecom, url: 'SECRET KEY'}\n",
    ]
    for text in cases:
        cfg = tmp_path / "bad.yaml"
        cfg.write_text(text)
        p = check_config(hubcache_bin, cfg)
        out = p.stdout + p.stderr
        assert p.returncode != 0, out
        assert "plugins.alerts[0]" in out, out
        assert "SECRET" not in out, out


def test_serve_refuses_an_unknown_sink_kind(hubcache_bin, tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(f"listen: 127.0.0.1:{free_port()}\n"
                   f"server: {{pid_file: {tmp_path}/x.pid, upgrade_sock: {tmp_path}/x.sock}}\n"
                   "plugins:\n  alerts:\n    - kind: pagerduty\n")
    p = subprocess.Popen([hubcache_bin, "serve", "--config", str(cfg)], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = p.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate(timeout=10)
        pytest.fail("hubcache serve kept running with an unknown alert sink kind")
    assert p.returncode != 0
    assert 'plugins.alerts[0].kind: unknown kind "pagerduty"' in out, out
