#!/bin/sh
# Install, remove, restart or follow ollama-proxy as a user LaunchAgent (macOS).
#
#   contrib/launchd/install.sh install     copy ollama_proxy.py to ~/.local/share/ollama-proxy/,
#                                          write ~/Library/LaunchAgents/com.github.ollama-proxy.plist
#                                          and (re)load it: it runs now and at every login
#   contrib/launchd/install.sh uninstall   stop it, remove the plist and the installed copy
#   contrib/launchd/install.sh restart     launchctl kickstart -k: stop it and start it again
#   contrib/launchd/install.sh status      launchctl print
#   contrib/launchd/install.sh logs        tail -F ~/Library/Logs/ollama-proxy.log
#
# The python that runs the proxy ($PYTHON, default /usr/bin/python3, macOS's own) must be
# able to import h11:
#
#   /usr/bin/python3 -m pip install --user h11
#
# Settings live in the plist's EnvironmentVariables (see `python3 ollama_proxy.py --help`):
# edit contrib/launchd/com.github.ollama-proxy.plist and run `install.sh install` again
# (launchd reads a plist only at bootstrap; `restart` restarts the process with the same settings).
set -eu

LABEL=com.github.ollama-proxy
PYTHON=${PYTHON:-/usr/bin/python3}
HERE=$(cd "$(dirname "$0")" && pwd)
SOURCE=$HERE/../../ollama_proxy.py
TEMPLATE=$HERE/$LABEL.plist
SHARE=$HOME/.local/share/ollama-proxy
AGENTS=$HOME/Library/LaunchAgents
PLIST=$AGENTS/$LABEL.plist
LOG=$HOME/Library/Logs/ollama-proxy.log
DOMAIN=gui/$(id -u)

die() { echo "install.sh: $*" >&2; exit 1; }

# A value for the replacement side of sed s|...|...|, escaped for XML first.
sed_value() {
    printf '%s' "$1" | sed -e 's/&/\&amp;/g' -e 's/</\&lt;/g' -e 's/>/\&gt;/g' -e 's/[\\|&]/\\&/g'
}

bootout() {
    launchctl bootout "$DOMAIN/$LABEL" >/dev/null 2>&1 || true
}

do_install() {
    [ -f "$SOURCE" ] || die "no ollama_proxy.py at $SOURCE"
    [ -f "$TEMPLATE" ] || die "no plist template at $TEMPLATE"
    case $PYTHON in /*) ;; *) die "PYTHON must be an absolute path (launchd has no PATH to search), not $PYTHON" ;; esac
    if ! "$PYTHON" -c 'import h11' >/dev/null 2>&1; then
        die "$PYTHON cannot import h11; install it first:  $PYTHON -m pip install --user h11"
    fi
    mkdir -p "$SHARE" "$AGENTS" "$(dirname "$LOG")"
    cp "$SOURCE" "$SHARE/ollama_proxy.py"
    home=$(sed_value "$HOME")
    python=$(sed_value "$PYTHON")
    sed -e "s|/Users/USERNAME|$home|g" \
        -e "s|<string>/usr/bin/python3</string>|<string>$python</string>|" \
        "$TEMPLATE" >"$PLIST.tmp"
    mv "$PLIST.tmp" "$PLIST"
    if command -v plutil >/dev/null 2>&1; then
        plutil -lint "$PLIST" >/dev/null || die "$PLIST is not a valid plist"
    fi
    bootout
    # Right after a bootout launchd may still be tearing the old job down ("Bootstrap failed:
    # 5: Input/output error"): try a few times.
    tries=0
    until launchctl bootstrap "$DOMAIN" "$PLIST"; do
        tries=$((tries + 1))
        [ "$tries" -lt 5 ] || die "launchctl bootstrap $DOMAIN $PLIST failed"
        sleep 1
    done
    echo "ollama-proxy installed: $PLIST"
    echo "it runs $PYTHON $SHARE/ollama_proxy.py; log: $LOG"
}

do_uninstall() {
    bootout
    rm -f "$PLIST"
    rm -f "$SHARE/ollama_proxy.py"
    rmdir "$SHARE" 2>/dev/null || true
    echo "ollama-proxy uninstalled (the log $LOG is left in place)"
}

case ${1:-} in
    install) do_install ;;
    uninstall) do_uninstall ;;
    restart) launchctl kickstart -k "$DOMAIN/$LABEL" ;;
    status) launchctl print "$DOMAIN/$LABEL" ;;
    logs) exec tail -n 100 -F "$LOG" ;;
    *) echo "usage: $0 install|uninstall|restart|status|logs" >&2; exit 2 ;;
esac
