"""A lean transport under hvac: its requests go straight to urllib3.

hvac builds every request and reads every answer as usual; only the layer in
between changes. requests' Session machinery (request preparation, hooks,
cookie jars, environment merging) costs more CPU than the read itself, and a
Vault render is CPU-bound at a few hundred secrets: this path halves the CPU of
a read. Anything it does not handle the same way is left to requests:
proxies, redirects (a standby node sends 307 to the active one), file uploads.

urllib3 failures are raised as the requests exceptions they would have been,
so error mapping (http.mapped_errors) sees one vocabulary.
"""

from __future__ import annotations

import json as _json
from typing import Any
from urllib.parse import urlencode

REDIRECTS = frozenset({301, 302, 303, 307, 308})


class DirectTransport:
    def __init__(
        self, verify: bool | str, cert: tuple[str, str] | str | None, server_name: str | None, pool_size: int
    ) -> None:
        import os

        import urllib3

        kw: dict[str, Any] = {"maxsize": pool_size, "block": False, "retries": False}
        if verify is False:
            kw["cert_reqs"] = "CERT_NONE"
            kw["assert_hostname"] = False
        else:
            kw["cert_reqs"] = "CERT_REQUIRED"
            if isinstance(verify, str):
                kw["ca_cert_dir" if os.path.isdir(verify) else "ca_certs"] = verify
            else:
                import certifi  # what requests trusts by default

                kw["ca_certs"] = certifi.where()
            if server_name:
                kw["server_hostname"] = server_name
                kw["assert_hostname"] = server_name
        if isinstance(cert, tuple):
            kw["cert_file"], kw["key_file"] = cert
        elif cert:
            kw["cert_file"] = cert
        self.pool = urllib3.PoolManager(num_pools=4, **kw)

    def send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        *,
        params: Any = None,
        json: Any = None,
        data: Any = None,
        timeout: float | None = None,
    ) -> Any:
        """A requests.Response for this call, or None when requests must do it (a redirect)."""
        import requests
        import urllib3
        from requests.structures import CaseInsensitiveDict
        from requests.utils import get_encoding_from_headers

        if params:
            url += ("&" if "?" in url else "?") + urlencode(params, doseq=True)
        body = data
        if json is not None:
            body = _json.dumps(json).encode()
            headers = {**headers, "Content-Type": "application/json"}
        try:
            answer = self.pool.urlopen(
                method.upper(),  # hvac says "get"; requests upper-cases it, urllib3 does not
                url,
                body=body,
                headers=headers,
                timeout=urllib3.Timeout(connect=timeout, read=timeout),
                redirect=False,
                preload_content=True,
            )
        except urllib3.exceptions.SSLError as e:
            raise requests.exceptions.SSLError(e) from e
        except urllib3.exceptions.NewConnectionError as e:  # a ConnectTimeoutError subclass, for history
            raise requests.exceptions.ConnectionError(e) from e
        except urllib3.exceptions.ConnectTimeoutError as e:
            raise requests.exceptions.ConnectTimeout(e) from e
        except urllib3.exceptions.ReadTimeoutError as e:
            raise requests.exceptions.ReadTimeout(e) from e
        except (urllib3.exceptions.HTTPError, OSError) as e:  # refused, reset, truncated, protocol
            raise requests.exceptions.ConnectionError(e) from e
        if answer.status in REDIRECTS:
            return None
        response = requests.Response()
        response.status_code = answer.status
        response.headers = CaseInsensitiveDict(answer.headers)
        response.encoding = get_encoding_from_headers(response.headers)
        response.reason = answer.reason or ""
        response.url = url
        response._content = answer.data
        return response
