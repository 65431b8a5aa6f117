"""The management operations over the JSON API (``--url URL``, an API token).

stdlib http.client: for HTTPS with the console's self-signed certificate, give its
fingerprint (``--fingerprint`` / TIERVAULT_CONSOLE_FINGERPRINT): it is checked before
anything is sent. Without one, the certificate must verify against the system's CAs.
"""

from __future__ import annotations

import http.client
import json
import ssl
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from tiervault.console.errors import (
    BadValue,
    Conflict,
    ConsoleError,
    Forbidden,
    NotFound,
    Refused,
    Unreachable,
)
from tiervault.console.ops import query_params
from tiervault.console.services.devices import DeviceQuery

TIMEOUT = 60.0          # for the answer, once connected
CONNECT_TIMEOUT = 10.0  # for the connection and the TLS handshake
_STATUS = {400: BadValue, 413: BadValue, 422: BadValue, 401: Refused, 403: Forbidden,
           404: NotFound, 409: Conflict}


class RemoteOps:
    """A console reached at ``url`` with an API token."""

    def __init__(self, url: str, token: str | None, fingerprint: str | None = None) -> None:
        from tiervault.console.tls import normalise_fingerprint

        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadValue(f"--url {url!r}: expected https://HOST:PORT")
        if not token:
            raise Refused("no API token: give --token or TIERVAULT_CONSOLE_TOKEN "
                          "(create one with: tiervault console api-token create USER)")
        self.parts = parts
        self.token = token
        self.fingerprint = normalise_fingerprint(fingerprint) if fingerprint else None

    def _conn(self) -> http.client.HTTPConnection:
        host, port = self.parts.hostname or "", self.parts.port
        if self.parts.scheme == "http":
            return http.client.HTTPConnection(host, port or 80, timeout=CONNECT_TIMEOUT)
        if self.fingerprint:
            sslctx = ssl.create_default_context()
            sslctx.check_hostname = False
            sslctx.verify_mode = ssl.CERT_NONE   # pinned instead: checked below
        else:
            sslctx = ssl.create_default_context()
        return http.client.HTTPSConnection(host, port or 443, timeout=CONNECT_TIMEOUT,
                                           context=sslctx)

    def call(self, method: str, path: str, body: Any = None,
             params: dict[str, Any] | None = None) -> Any:
        """One request; the parsed JSON answer, or the error the status means."""
        from tiervault.console.tls import fingerprint_der

        if params:
            path += "?" + urlencode(params)
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        conn = self._conn()
        stage = "connect"
        try:
            conn.connect()
            if conn.sock is not None:
                conn.sock.settimeout(TIMEOUT)
            stage = "answer"
            if self.fingerprint and isinstance(conn.sock, ssl.SSLSocket):
                der = conn.sock.getpeercert(binary_form=True) or b""
                if fingerprint_der(der) != self.fingerprint:
                    raise Refused(f"the console's certificate is {fingerprint_der(der)}, "
                                  f"not the pinned {self.fingerprint}")
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except ssl.SSLCertVerificationError as e:
            raise Refused(f"the console's certificate does not verify ({e.verify_message}): "
                          "give its fingerprint with --fingerprint") from None
        except TimeoutError:
            waited = CONNECT_TIMEOUT if stage == "connect" else TIMEOUT
            what = "accept the connection" if stage == "connect" else "answer"
            raise Unreachable(f"the console at {self.parts.geturl()} did not {what} within "
                              f"{waited:.0f} s: check that it is running and not hung "
                              "(or that the address is right)") from None
        except (OSError, http.client.HTTPException) as e:
            hint = " (if the console serves HTTPS, use an https:// URL)" if isinstance(
                e, http.client.RemoteDisconnected) and self.parts.scheme == "http" else ""
            raise Unreachable(f"cannot reach the console at {self.parts.geturl()}: {e}{hint}"
                              ) from None
        finally:
            conn.close()
        try:
            answer = json.loads(raw) if raw else None
        except ValueError:
            answer = None
        if resp.status >= 400:
            msg = answer.get("error") if isinstance(answer, dict) else None
            if msg is None and isinstance(answer, dict) and "detail" in answer:
                msg = f"bad request: {answer['detail']}"
            raise _STATUS.get(resp.status, ConsoleError)(
                str(msg or f"the console answered HTTP {resp.status}"))
        return answer

    def devices(self, q: DeviceQuery) -> tuple[list[dict[str, Any]], int]:
        rows = self.call("GET", "/api/v1/devices", params=query_params(q))
        return rows, len(rows)

    def device(self, ref: str) -> dict[str, Any]:
        out: dict[str, Any] = self.call("GET", f"/api/v1/devices/{quote(ref, safe='')}")
        return out

    def device_sessions(self, ref: str, limit: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = self.call(
            "GET", f"/api/v1/devices/{quote(ref, safe='')}/sessions", params={"limit": limit})
        return out

    def revoke_device(self, ref: str) -> dict[str, Any]:
        out: dict[str, Any] = self.call("POST",
                                        f"/api/v1/devices/{quote(ref, safe='')}/revoke")
        return out

    def rotate_device(self, ref: str) -> dict[str, Any]:
        out: dict[str, Any] = self.call("POST",
                                        f"/api/v1/devices/{quote(ref, safe='')}/rotate")
        return out

    def send(self, devices: list[str], type_: str, params: dict[str, Any],
             ttl: int | None) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"devices": devices, "type": type_, "params": params}
        if ttl is not None:
            body["ttl"] = ttl
        out: list[dict[str, Any]] = self.call("POST", "/api/v1/commands", body)
        return out

    def commands(self, device: str | None, state: str | None) -> list[dict[str, Any]]:
        params = {k: v for k, v in (("device", device), ("state", state)) if v}
        out: list[dict[str, Any]] = self.call("GET", "/api/v1/commands", params=params)
        return out

    def command(self, command_id: str) -> dict[str, Any]:
        out: dict[str, Any] = self.call("GET",
                                        f"/api/v1/commands/{quote(command_id, safe='')}")
        return out

    def cancel(self, command_id: str) -> dict[str, Any]:
        out: dict[str, Any] = self.call(
            "POST", f"/api/v1/commands/{quote(command_id, safe='')}/cancel")
        return out

    def create_token(self, customer: str, site: str | None, ttl: int, uses: int,
                     profile: dict[str, Any] | None) -> dict[str, Any]:
        out: dict[str, Any] = self.call("POST", "/api/v1/tokens", {
            "customer": customer, "site": site, "ttl": ttl, "uses": uses, "profile": profile})
        return out

    def tokens(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = self.call("GET", "/api/v1/tokens")
        return out

    def revoke_token(self, token_id: str) -> dict[str, Any]:
        out: dict[str, Any] = self.call("POST",
                                        f"/api/v1/tokens/{quote(token_id, safe='')}/revoke")
        return out

    def add_user(self, name: str, password: str) -> dict[str, Any]:
        out: dict[str, Any] = self.call("POST", "/api/v1/users",
                                        {"name": name, "password": password})
        return out

    def create_api_token(self, user: str) -> dict[str, Any]:
        out: dict[str, Any] = self.call("POST", "/api/v1/api-tokens", {"user": user})
        return out

    def revoke_api_token(self, token_id: str) -> dict[str, Any]:
        out: dict[str, Any] = self.call(
            "POST", f"/api/v1/api-tokens/{quote(token_id, safe='')}/revoke")
        return out

    def customers(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = self.call("GET", "/api/v1/customers")
        return out

    def set_thresholds(self, name: str, green_hours: int | None,
                       orange_hours: int | None) -> dict[str, Any]:
        out: dict[str, Any] = self.call(
            "POST", f"/api/v1/customers/{quote(name, safe='')}/thresholds",
            {"green_hours": green_hours, "orange_hours": orange_hours})
        return out
