getent group gatewatch >/dev/null || groupadd --system gatewatch
getent passwd gatewatch >/dev/null || useradd --system --gid gatewatch --home-dir /var/lib/gatewatch --no-create-home --shell /sbin/nologin --comment "gatewatch sensor" gatewatch
