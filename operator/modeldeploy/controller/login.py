"""Kopf's login: the operator's own credentials (credentials.py), the very object our API client uses.

Why a login handler of ours: Kopf logs in through the `kubernetes` package when it is installed, and the
operator process runs without that package (credentials.py says why). Registering one login handler
replaces Kopf's built-in ones. Kopf calls it at start, when the last answer expired (a token read from a
file expires after `credentials.LOGIN_EXPIRES_S`) and after a 401, so a rotated service-account token is
read again for Kopf's watches too (our client reads the file itself, every `credentials.REREAD_S`).
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from modeldeploy.controller.credentials import Credentials, load_any

MEMO_KEY = "credentials"


def credentials_of(memo: Any) -> Credentials:
    """The process's one Credentials: what `run.main` put in the memo, else loaded now and kept there."""
    creds: Credentials | None = memo.get(MEMO_KEY)
    if creds is None:
        creds = load_any(log=logging.getLogger(__name__).info)
        memo[MEMO_KEY] = creds
    return creds


@kopf.on.login()
def login(memo: kopf.Memo, settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo:
    creds = credentials_of(memo)
    creds.reread_token()  # asked again: the token expired or got a 401; a token file may hold a new one
    return creds.connection_info(trust_env=settings.networking.trust_env)
