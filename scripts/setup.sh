#!/bin/sh
# Install what relist needs into ./.venv (and, with --test, the Debian tools the
# test suite uses as independent peers).  Idempotent; used by demo.sh and test.sh.
set -eu
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "setup: need root for: $*" >&2; return 1; fi
}

apt_install() {
    opts=""
    if [ "${1:-}" = "--no-install-recommends" ]; then opts=$1; shift; fi
    missing=""
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
    done
    [ -z "$missing" ] && return 0
    echo "setup: installing Debian packages:$missing"
    as_root apt-get update -qq
    echo "postfix postfix/main_mailer_type select No configuration" | as_root debconf-set-selections
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $opts $missing >/dev/null
}

# What compiling the core needs (scripts/build_core.sh): a C compiler, Python's headers.
have_headers() {
    .venv/bin/python -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'
}
can_compile() { command -v cc >/dev/null && have_headers; }

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    if ! $PY -m venv .venv 2>/dev/null; then
        rm -rf .venv
        apt_install python3-venv
        $PY -m venv .venv
    fi
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if [ $want_test = 1 ]; then
    # Independent verifiers and load tools the tests and benchmarks use:
    # Perl Mail::DKIM (+ CryptX for Ed25519), OpenDKIM, Postfix's smtp-source/smtp-sink,
    # and rspamd as the independent receiver (the tests start their own instance on
    # loopback; without its recommended redis-server, which relist's tests do not use).
    apt_install libmail-dkim-perl libcryptx-perl opendkim opendkim-tools postfix
    apt_install --no-install-recommends rspamd
    # PostgreSQL's server binaries: the store tests start their own server in a temporary
    # directory on a free loopback port (tests/pgserver.py), never the package's cluster.
    apt_install postgresql
    # Headless Chromium renders `relist report --html` in tests/test_report_html.py.
    apt_install --no-install-recommends chromium
    # The tests run against the Python sources and the compiled core (scripts/test.sh):
    # a C compiler and the Python headers are needed.
    apt_install gcc libc6-dev
    have_headers || apt_install python3-dev
    # The versions the suite last passed with (scripts/test-constraints.txt says why).
    .venv/bin/python -m pip install -q -c scripts/test-constraints.txt -e '.[test,build]'
    # GNU Mailman 3.3.10 in its own venv (.cache/mailman-venv/), built once, for
    # tests/test_deploy_e2e.py; that test builds it itself when this could not (and then
    # fails under CI=true, skips elsewhere).
    .venv/bin/python -c 'from relist.sandbox.mailman import ensure_venv; print("setup: Mailman in", ensure_venv())' \
        || echo "setup: could not build the Mailman venv (tests/test_deploy_e2e.py will say why)" >&2
elif can_compile; then
    .venv/bin/python -m pip install -q -e '.[build]'
else
    .venv/bin/python -m pip install -q -e .
fi

# The core compiled with mypyc (relist/core_build.py): 10-15 % less CPU in the core
# per post.  Built once, and again only when its sources change.  Without a C compiler or
# the Python headers the Python sources run, and say so (relist check-config).
if [ $want_test = 1 ]; then
    sh scripts/build_core.sh
elif can_compile; then
    sh scripts/build_core.sh \
        || echo "setup: the core could not be compiled; its Python sources run (sh scripts/build_core.sh --force says why)" >&2
else
    echo "setup: no C compiler or Python headers: relist's core runs from its Python sources" \
         "(for the compiled core: apt install gcc python3-dev; sh scripts/setup.sh)" >&2
fi
