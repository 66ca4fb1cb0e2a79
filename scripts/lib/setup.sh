# Shared set-up for scripts/run, scripts/test and scripts/bench: install what a fresh machine
# lacks. Sourced, not executed.

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# Where cargo puts binaries (honours CARGO_TARGET_DIR).
target_dir="${CARGO_TARGET_DIR:-$repo_root/target}"

# Pingora's zlib-ng build needs cmake.
ensure_cmake() {
  if command -v cmake >/dev/null 2>&1; then
    return
  fi
  echo "setup: installing cmake (needed to build Pingora's zlib-ng)" >&2
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  if ! $sudo apt-get install -y cmake >/dev/null 2>&1; then
    $sudo apt-get update >/dev/null
    $sudo apt-get install -y cmake >/dev/null
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
