# Shared set-up for scripts/run, scripts/test and scripts/bench: install what a fresh machine
# lacks. Sourced, not executed.

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# Where cargo puts binaries (honours CARGO_TARGET_DIR).
target_dir="${CARGO_TARGET_DIR:-$repo_root/target}"

# Pingora's zlib-ng build needs cmake.
ensure_cmake() {
  ensure_command cmake cmake "needed to build Pingora's zlib-ng"
}

# The download tools the end-to-end suite drives through the mirror (tests/e2e/test_http_tools.py).
ensure_download_tools() {
  ensure_command curl curl "the e2e suite resumes downloads with curl -C -"
  ensure_command wget wget "the e2e suite resumes downloads with wget -c"
  ensure_command aria2c aria2 "the e2e suite downloads with aria2c -x 8"
}

# Headless Chromium for the status page test (tests/e2e/test_status_page.py): Debian's package,
# driven over the DevTools protocol; no browser download of its own.
ensure_browser() {
  ensure_command chromium chromium "the e2e suite renders the admin status page in headless Chromium"
}

# mkfs.xfs for tests/e2e/test_hf_cache.py: `hubcache export` onto a loop-mounted XFS must
# reflink (the test skips without it).
ensure_xfs() {
  ensure_command mkfs.xfs xfsprogs "the e2e suite checks that hubcache export reflinks on XFS"
}

# ensure_command COMMAND DEBIAN_PACKAGE WHY: install the package when the command is missing.
ensure_command() {
  local command="$1" package="$2" why="$3"
  if command -v "$command" >/dev/null 2>&1; then
    return
  fi
  echo "setup: installing $package ($why)" >&2
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  if ! $sudo apt-get install -y "$package" >/dev/null 2>&1; then
    $sudo apt-get update >/dev/null
    $sudo apt-get install -y "$package" >/dev/null
  fi
}

# Python venvs for the end-to-end tests: .venv with the newest huggingface_hub, pytest and
# requests; .venv-legacy with huggingface_hub 0.36 and hf_transfer (the last client generation
# with relative-only redirects and parallel ranged downloads); .venv-olah with the real Olah
# mirror (its cache is what `hubcache cache import --olah` reads; kept apart so its
# dependencies never change the client the suite tests).
ensure_venv() {
  ensure_venv_at "$repo_root/.venv" "$repo_root/tests/requirements.txt"
  ensure_venv_at "$repo_root/.venv-legacy" "$repo_root/tests/requirements-legacy.txt"
  ensure_venv_at "$repo_root/.venv-olah" "$repo_root/tests/requirements-olah.txt"
}

# .venv-ml: datasets and transformers for tests/e2e/test_ml_libraries.py (heavy, so apart and
# only for scripts/test).
ensure_ml_venv() {
  ensure_venv_at "$repo_root/.venv-ml" "$repo_root/tests/requirements-ml.txt"
}

ensure_venv_at() {
  local venv="$1" requirements="$2"
  local stamp="$venv/.requirements"
  local wanted
  wanted="$(cat "$requirements")"
  if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
    return
  fi
  echo "setup: creating $venv with $(basename "$requirements")" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  "$venv/bin/pip" install --quiet -r "$requirements"
  printf '%s' "$wanted" > "$stamp"
}
