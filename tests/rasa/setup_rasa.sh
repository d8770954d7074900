#!/usr/bin/env bash
# Build the cached Rasa 3.6 venv used by the real-Rasa tests (tests/test_nlu_rasa_server.py).
#
#   tests/rasa/setup_rasa.sh                 install (a quick no-op when the venv is already there)
#   tests/rasa/setup_rasa.sh --find-python   print the Python 3.10 it would use, or exit 1
#   tests/rasa/setup_rasa.sh --venv          print the venv's directory
#   tests/rasa/setup_rasa.sh --ready         exit 0 when the venv is built and up to date with the pins
#
# The venv lives outside the repo, in ${CRMBOT_RASA_VENV:-${XDG_CACHE_HOME:-~/.cache}/crmbot/rasa-3.6-venv},
# so later runs and CI on the same machine reuse it (it is about 2.7 GB, tensorflow included).
# Every package is pinned in requirements.lock (from requirements.txt). A stamp file holds the hash of
# both: a changed pin rebuilds the venv, an interrupted install (no stamp) is thrown away and redone.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
requirements="$here/requirements.txt"
lock="$here/requirements.lock"
venv="${CRMBOT_RASA_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/crmbot/rasa-3.6-venv}"
stamp="$venv/.crmbot-rasa-installed"

find_python() {
  # Rasa 3.6 supports Python 3.8-3.10 only; we look for 3.10: $RASA_PYTHON, python3.10 on PATH
  # (a pyenv shim counts only if it really runs), then pyenv's versions, then the usual places.
  local candidate
  for candidate in "${RASA_PYTHON:-}" python3.10 \
      "$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"/versions/3.10*/bin/python3.10 \
      /usr/local/bin/python3.10 /usr/bin/python3.10; do
    [ -n "$candidate" ] || continue
    if "$candidate" -c 'import sys, venv; sys.exit(sys.version_info[:2] != (3, 10))' >/dev/null 2>&1; then
      command -v "$candidate" 2>/dev/null || echo "$candidate"
      return 0
    fi
  done
  return 1
}

want="$(cat "$requirements" "$lock" | sha256sum | cut -c1-16)"
ready() { [ -f "$stamp" ] && [ "$(head -n1 "$stamp")" = "$want" ] && [ -x "$venv/bin/rasa" ]; }

case "${1:-}" in
  --find-python) find_python; exit $? ;;
  --venv) echo "$venv"; exit 0 ;;
  --ready) ready; exit $? ;;
  "") ;;
  *) echo "usage: $0 [--find-python|--venv|--ready]" >&2; exit 2 ;;
esac

if ready; then
  exit 0
fi
if ! python="$(find_python)"; then
  echo "Python 3.10 not found: cannot build the Rasa 3.6 venv (Rasa 3.6 needs Python 3.8-3.10)" >&2
  exit 1
fi
echo "Building the Rasa 3.6 venv in $venv with $python (about 2.7 GB; a few minutes, once per machine)"
started=$(date +%s)
rm -rf "$venv"
mkdir -p "$(dirname "$venv")"
"$python" -m venv "$venv"
pip_install() {
  # (A pip.conf naming a local index that is absent here makes pip warn once per package: not shown.)
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@" \
    2> >(grep -v "^WARNING: Location 'file:" >&2)
}
pip_install --upgrade "pip==24.3.1"
pip_install --prefer-binary -r "$lock"
SQLALCHEMY_SILENCE_UBER_WARNING=1 RASA_TELEMETRY_ENABLED=false "$venv/bin/rasa" --version >/dev/null
seconds=$(( $(date +%s) - started ))
size="$(du -sh "$venv" | cut -f1)"
{
  echo "$want"
  echo "installed $(date -u +%Y-%m-%dT%H:%M:%SZ) in ${seconds}s, ${size}, with $python"
  "$venv/bin/python" -m pip freeze
} >"$stamp.tmp"
mv "$stamp.tmp" "$stamp"
echo "Rasa 3.6 venv ready in ${seconds}s (${size}): $venv"
