#!/usr/bin/env bash
# Build the Debian package: target/debian/tollgate_VERSION_ARCH.deb
#
#   systemd/build-deb.sh                 release build, then package
#   systemd/build-deb.sh --profile dev --no-build --fast    package an existing debug build
#
# The package installs /usr/bin/tollgate, the unit as /lib/systemd/system/tollgate.service
# (the unit of systemd/ with /usr/local paths changed to /usr), /etc/tollgate/tollgate.yaml
# (conf/systemd.yaml) and /etc/tollgate/env (systemd/env.example) as conffiles, and a
# postinst that creates the `tollgate` user and its directories. Installs cargo-deb if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null 2>&1 || cargo install cargo-deb --locked --version 3.8.0
mkdir -p target/deb-assets
sed -e 's#/usr/local/bin/tollgate#/usr/bin/tollgate#g' \
    -e 's#/usr/local/share/doc/tollgate#/usr/share/doc/tollgate#g' \
    systemd/tollgate.service > target/deb-assets/tollgate.service
exec cargo deb -p tollgate "$@"
