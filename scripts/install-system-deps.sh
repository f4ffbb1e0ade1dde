#!/usr/bin/env bash
# Install the Debian 12 packages the integration and browser tests need.
#
# Idempotent and fast when everything is present: each package is checked
# first (binary on disk or `dpkg -s`), and `apt-get update` runs at most once,
# only when something must be installed. Run as root.
#
#   scripts/install-system-deps.sh
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

# The servers scripts/services.sh starts, plus Debian's chromium for the
# browser tests (Playwright's own browser download does not work here), and
# nginx, openssl and systemd-analyze for the deploy tests (tests/ops/test_deploy.py).
PACKAGES=(postgresql-15 redis-server radosgw ceph-mon ceph-osd ceph-mgr chromium nginx openssl systemd)

# PostgreSQL may come from the image rather than from the Debian package,
# so the binary is what counts, not the package name.
PG_SERVER_BIN=/usr/lib/postgresql/15/bin/postgres

log() { printf 'install-system-deps: %s\n' "$*" >&2; }

# True when the package is installed (dpkg's "install ok installed").
dpkg_installed() {
  [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

# Decide per package whether it is missing, with the cheapest reliable check.
is_missing() {
  local pkg=$1
  case "$pkg" in
    postgresql-15) [[ ! -x "$PG_SERVER_BIN" ]] ;;
    redis-server) ! command -v redis-server >/dev/null 2>&1 || ! dpkg_installed redis-server ;;
    radosgw) ! command -v radosgw >/dev/null 2>&1 || ! dpkg_installed radosgw ;;
    chromium) ! command -v chromium >/dev/null 2>&1 ;;
    nginx) ! command -v nginx >/dev/null 2>&1 && [[ ! -x /usr/sbin/nginx ]] ;;
    openssl) ! command -v openssl >/dev/null 2>&1 ;;
    systemd) ! command -v systemd-analyze >/dev/null 2>&1 ;;
    *) ! dpkg_installed "$pkg" ;;
  esac
}

main() {
  if [[ $EUID -ne 0 ]]; then
    log "must run as root (apt-get install)"
    exit 1
  fi

  local missing=() pkg
  for pkg in "${PACKAGES[@]}"; do
    if is_missing "$pkg"; then
      missing+=("$pkg")
    fi
  done

  if [[ ${#missing[@]} -eq 0 ]]; then
    log "all present: ${PACKAGES[*]}"
    return 0
  fi

  log "installing: ${missing[*]}"
  apt-get update -q
  # --no-install-recommends keeps ceph from pulling in unrelated daemons; the
  # packages listed are all the tests use.
  apt-get install -y -q --no-install-recommends "${missing[@]}"
  log "done"
}

main "$@"
