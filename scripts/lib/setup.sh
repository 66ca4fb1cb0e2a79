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

# A Python venv with huggingface_hub, pytest and requests for the end-to-end tests.
ensure_venv() {
  local venv="$repo_root/.venv"
  local stamp="$venv/.requirements"
  local wanted
  wanted="$(cat "$repo_root/tests/requirements.txt")"
  if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
    return
  fi
  echo "setup: creating $venv with the test requirements" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  "$venv/bin/pip" install --quiet -r "$repo_root/tests/requirements.txt"
  printf '%s' "$wanted" > "$stamp"
}
