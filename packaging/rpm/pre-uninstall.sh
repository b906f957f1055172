if [ "$1" = 0 ] && [ -x /usr/bin/systemctl ]; then
    systemctl stop gatewatch.service >/dev/null 2>&1 || :
    systemctl disable gatewatch.service >/dev/null 2>&1 || :
fi
