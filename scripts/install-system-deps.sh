#!/usr/bin/env bash
# Install the Debian packages and system user the test suite needs (idempotent).
#
# - dovecot-core, dovecot-imapd: the real IMAP server the integration tests start
#   on a private loopback port (tests/support/dovecot.py); the system service is
#   never started.
# - isync (mbsync), notmuch: peers for the benchmarks.
# - chromium: renders the digest email headless at 375 px and 1280 px
#   (tests/integration/test_digest_render.py): a real browser engine is the only
#   honest check that nothing scrolls sideways on a phone and the buttons are
#   big enough to tap.
# - system user "vmail": owns the test Maildirs.
#
# Prints one line "system deps: ok" when everything is present (any user).
# As root it installs what is missing; otherwise it prints the commands to run
# as root and exits 1.
set -euo pipefail

PACKAGES=(dovecot-core dovecot-imapd isync notmuch chromium)
VMAIL_USER=vmail
POLICY_RC=/usr/sbin/policy-rc.d

pkg_installed() {
    # "install ok installed" only: half-configured or removed-but-config packages don't count.
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

missing_pkgs=()
for pkg in "${PACKAGES[@]}"; do
    pkg_installed "$pkg" || missing_pkgs+=("$pkg")
done
need_user=0
getent passwd "$VMAIL_USER" >/dev/null || need_user=1

if [[ ${#missing_pkgs[@]} -eq 0 && $need_user -eq 0 ]]; then
    echo "system deps: ok"
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "system deps: missing; run as root:" >&2
    if [[ ${#missing_pkgs[@]} -gt 0 ]]; then
        echo "  sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing_pkgs[*]}" >&2
    fi
    if [[ $need_user -eq 1 ]]; then
        echo "  sudo useradd --system --no-create-home --shell /usr/sbin/nologin $VMAIL_USER" >&2
    fi
    echo "  (or: sudo $0)" >&2
    exit 1
fi

stop_system_dovecot() {
    # The package may have started (or enabled) the system server; the tests run
    # their own and a system one on port 143 is not wanted.
    if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
        systemctl disable --now dovecot.service dovecot.socket >/dev/null 2>&1 || true
    fi
    local pidfile=/run/dovecot/master.pid pid
    if [[ -r $pidfile ]]; then
        pid=$(cat "$pidfile")
        if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
            echo "system deps: stopping system dovecot (pid $pid)"
            kill "$pid" || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        fi
    fi
}

if [[ ${#missing_pkgs[@]} -gt 0 ]]; then
    echo "system deps: installing ${missing_pkgs[*]}"
    # Deny service starts during the install (exit 101 = "action forbidden").
    # An existing policy-rc.d (e.g. Docker's) belongs to someone else: keep it.
    created_policy=0
    if [[ ! -e $POLICY_RC ]]; then
        printf '#!/bin/sh\n# mailsync install-system-deps.sh: no service starts during install\nexit 101\n' >"$POLICY_RC"
        chmod 755 "$POLICY_RC"
        created_policy=1
        trap '[[ $created_policy -eq 1 ]] && rm -f "$POLICY_RC"' EXIT
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt_opts=(-y -q --no-install-recommends -o DPkg::Lock::Timeout=300)
    apt-get update -q >/dev/null
    apt-get install "${apt_opts[@]}" "${missing_pkgs[@]}" >/dev/null
    stop_system_dovecot
fi

if [[ $need_user -eq 1 ]]; then
    echo "system deps: creating system user $VMAIL_USER"
    useradd --system --no-create-home --shell /usr/sbin/nologin "$VMAIL_USER"
fi

# Verify rather than trust: a failed postinst leaves packages half-configured.
for pkg in "${PACKAGES[@]}"; do
    if ! pkg_installed "$pkg"; then
        echo "system deps: $pkg is still not installed" >&2
        exit 1
    fi
done
echo "system deps: ok"
