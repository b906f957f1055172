install -d -o gatewatch -g gatewatch -m 0750 /var/lib/gatewatch
install -d -o root -g gatewatch -m 0750 /etc/gatewatch/rules.d
chgrp gatewatch /etc/gatewatch/gatewatch.toml
if [ -x /usr/bin/systemctl ]; then systemctl daemon-reload >/dev/null 2>&1 || :; fi
