"""The one-line unattended install commands the tokens page shows (Linux and macOS).

Each line installs tiervault for the user, makes the vault's passphrase (a random one in
``~/.config/tiervault/passphrase``, mode 0600, kept if it exists: the daemon reads it at every
start, so back it up or export the key, docs/console.md), enrols with the token (pinning the
console's certificate fingerprint) and starts the daemon as a service: a systemd user unit on Linux
(docs/daemon.md), a launchd agent on macOS. Values are shell-quoted: a console URL or a
token never turns into shell syntax.
"""

from __future__ import annotations

from shlex import quote

UNIT = ("[Unit]\\nDescription=tiervault backup daemon\\nAfter=network-online.target\\n"
        "Wants=network-online.target\\n\\n[Service]\\nExecStart=%%h/.local/bin/tiervault "
        "--password-file %%h/.config/tiervault/passphrase daemon\\n"
        "KillSignal=SIGTERM\\nTimeoutStopSec=120\\nRestart=on-failure\\nRestartSec=30\\n"
        "RestartPreventExitStatus=2 3 4\\n\\n[Install]\\nWantedBy=default.target\\n")
LABEL = "org.tiervault.daemon"
PLIST = ('<?xml version="1.0" encoding="UTF-8"?>\\n<plist version="1.0"><dict>'
         f"<key>Label</key><string>{LABEL}</string>"
         "<key>ProgramArguments</key><array><string>%s</string><string>--password-file</string>"
         "<string>%s/.config/tiervault/passphrase</string><string>daemon</string></array>"
         "<key>RunAtLoad</key><true/><key>KeepAlive</key><dict><key>SuccessfulExit</key>"
         "<false/></dict><key>ThrottleInterval</key><integer>30</integer>"
         "<key>StandardErrorPath</key><string>%s/Library/Logs/tiervault.log</string>"
         "</dict></plist>\\n")


PASSPHRASE = "~/.config/tiervault/passphrase"
# A random passphrase unless one is there already (a re-run keeps the vault's own).
MAKE_PASSPHRASE = ("(umask 077 && mkdir -p ~/.config/tiervault && { [ -s " + PASSPHRASE
                   + " ] || head -c 32 /dev/urandom | base64 > " + PASSPHRASE + "; })")


def _enrol(binary: str, url: str, token: str, fingerprint: str | None) -> str:
    args = (f"{MAKE_PASSPHRASE} && {binary} --password-file {PASSPHRASE} enrol {quote(url)}"
            f" --token {quote(token)}")
    if fingerprint:
        args += f" --fingerprint {quote(fingerprint)}"
    return args


def linux(url: str, token: str, fingerprint: str | None, package: str = "tiervault") -> str:
    """pip --user, enrol, a systemd user unit enabled now and kept after logout."""
    unit = "~/.config/systemd/user/tiervault.service"
    return (f"python3 -m pip install --user {quote(package)} && "
            + _enrol("~/.local/bin/tiervault", url, token, fingerprint)
            + f" && mkdir -p ~/.config/systemd/user && printf '{UNIT}' > {unit}"
            " && systemctl --user daemon-reload && systemctl --user enable --now tiervault"
            ' && loginctl enable-linger "$USER"')


def macos(url: str, token: str, fingerprint: str | None, package: str = "tiervault") -> str:
    """pip --user, enrol, a launchd agent bootstrapped into the user's session."""
    plist = f"~/Library/LaunchAgents/{LABEL}.plist"
    return (f"python3 -m pip install --user {quote(package)} && "
            'TV="$(python3 -m site --user-base)/bin/tiervault" && '
            + _enrol('"$TV"', url, token, fingerprint)
            + " && mkdir -p ~/Library/LaunchAgents ~/Library/Logs"
            f" && printf '{PLIST}' \"$TV\" \"$HOME\" \"$HOME\" > {plist}"
            f" && launchctl bootstrap gui/$(id -u) {plist}")
