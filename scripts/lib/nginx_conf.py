"""The part of the benchmark's nginx configurations both nginx baselines share: a foreground,
unprivileged process (root's workers run as root so they can read the run directory), its pid,
log and temp paths in the run directory, and the `http` settings up to the `server` blocks."""

from __future__ import annotations

import os
from pathlib import Path


def preamble(workdir: Path, tmp: Path) -> str:
    """nginx.conf from its first line to inside `http {` (the caller adds servers and `}`)."""
    user = "user root root;\n" if os.geteuid() == 0 else ""  # workers must read the temp dir
    return f"""{user}daemon off;
worker_processes auto;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    sendfile on;
    tcp_nopush on;
    access_log off;
    keepalive_timeout 30;
    default_type application/octet-stream;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
"""
