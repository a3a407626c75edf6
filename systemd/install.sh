#!/usr/bin/env bash
# Install Tollgate as a systemd service. Idempotent: run it again to upgrade the binary;
# an existing config or env file is never overwritten.
#
#   sudo systemd/install.sh [path/to/tollgate]      (default: target/release/tollgate)
#
# ROOT=/some/dir installs into a staging root instead of / (no user is created and systemd
# is not told), which is what the tests do.
set -euo pipefail
cd "$(dirname "$0")/.."
root="${ROOT:-}"
bin="${1:-target/release/tollgate}"
[ -x "$bin" ] || { echo "no executable at $bin (cargo build --release first)" >&2; exit 1; }

if [ -z "$root" ] && ! id -u tollgate >/dev/null 2>&1; then
  useradd --system --home-dir /var/lib/tollgate --no-create-home --shell /usr/sbin/nologin tollgate
fi

install -d -m 0755 "$root/usr/local/bin" "$root/etc/systemd/system" "$root/usr/local/share/doc/tollgate"
install -d -m 0750 "$root/etc/tollgate" "$root/var/lib/tollgate" "$root/var/log/tollgate"
# Replace the binary atomically so a running instance keeps its inode.
install -m 0755 "$bin" "$root/usr/local/bin/tollgate.new"
mv -f "$root/usr/local/bin/tollgate.new" "$root/usr/local/bin/tollgate"
[ -e "$root/etc/tollgate/tollgate.yaml" ] || install -m 0640 conf/systemd.yaml "$root/etc/tollgate/tollgate.yaml"
if [ ! -e "$root/etc/tollgate/env" ]; then
  install -m 0600 systemd/env.example "$root/etc/tollgate/env"
fi
install -m 0644 systemd/tollgate.service "$root/etc/systemd/system/tollgate.service"
install -m 0644 README.md "$root/usr/local/share/doc/tollgate/README.md"

if [ -z "$root" ]; then
  chown -R tollgate:tollgate /var/lib/tollgate /var/log/tollgate
  chgrp tollgate /etc/tollgate /etc/tollgate/tollgate.yaml /etc/tollgate/env
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    echo "installed; start with: systemctl enable --now tollgate"
  else
    echo "installed; systemd is not running here, so the unit was not loaded"
  fi
fi
