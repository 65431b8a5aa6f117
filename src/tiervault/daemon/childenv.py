"""The environment of the commands the daemon starts (pre/post scripts, notifications).

They get the daemon's environment without its secrets: the passphrase
(``TIERVAULT_PASSWORD``, ``TIERVAULT_NEW_PASSWORD``), the tier passwords
(``TIERVAULT_FTP_PASSWORD``, ``TIERVAULT_SFTP_PASSWORD``), the S3 secret
(``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``) and any other
``TIERVAULT_*`` variable whose name says PASSWORD, SECRET, TOKEN or
CREDENTIAL. A script that needs a credential for its own work reads it from
its own file.
"""

from __future__ import annotations

from collections.abc import Mapping

#: Credentials outside the TIERVAULT_ namespace that the product (boto3) reads.
_FOREIGN_SECRETS = frozenset({"AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                              "AWS_SECURITY_TOKEN"})
_SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN", "CREDENTIAL", "PASSPHRASE")


def is_secret_name(name: str) -> bool:
    """True for an environment variable that carries one of the product's secrets."""
    upper = name.upper()
    if upper in _FOREIGN_SECRETS:
        return True
    return upper.startswith("TIERVAULT_") and any(w in upper for w in _SECRET_WORDS)


def child_env(base: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """``base`` without secrets, then ``extra`` (the TIERVAULT_SET etc. a child is given)."""
    env = {k: v for k, v in base.items() if not is_secret_name(k)}
    env.update(extra)
    return env
