#!/usr/bin/env bash
# gpaw-dev.sh: make Debian's GPAW (real DFT for the system /usr/bin/python3) available to augkd's tests and to
# bench/dft/make_gpaw_set.py; installs the `gpaw` package when root with apt-get. Exit 0 when GPAW imports.
set -euo pipefail
if /usr/bin/python3 -c "import gpaw" 2>/dev/null; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gpaw >/dev/null
fi
/usr/bin/python3 -c "import gpaw"
