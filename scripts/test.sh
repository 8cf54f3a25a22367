#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian machine (as root), then run it.
# Debian packages: Chromium (driven by Playwright via /usr/bin/chromium), redis-server, nginx
# and HAProxy (the load balancers of docs/redis.md, tested), and Node.js with npm (the browser modules' toolchain: esbuild, tsc, node --test).
# Python packages: livestream itself with its `test` extra. npm packages: js/package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
[ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
[ -x /usr/sbin/haproxy ] || need_apt+=(haproxy)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages: ${need_apt[*]}; installing them needs root. Either run this as root, or install them once with" >&2
    echo "  sudo apt-get install chromium redis-server nginx-light haproxy nodejs npm" >&2
    echo "and run it again as yourself: the test command itself needs no root." >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

python3 -m pip install -q --disable-pip-version-check -e ".[test]" 2>&1 | grep -v -E "^WARNING: (Location|Running pip)" || true
python3 -c "import livestream, playwright, websockets" # fail loudly if the install did not take
npm ci --prefix js --no-audit --no-fund --loglevel=error >/dev/null

# The report ends with line and branch coverage of the package (tests in subprocesses,
# such as the command-line ones, are not counted).
exec python3 -m pytest --cov=livestream --cov-report=term "$@"
