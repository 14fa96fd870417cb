"""Schemathesis hooks for test_openapi.py (loaded through SCHEMATHESIS_HOOKS).

A room of platform `rtp` sends its audio to the HOST:PORT of its `meeting_url`, and a `sip` room dials
the URI of its `meeting_url` (SPEC §6). Generated data must never make the server under test send
traffic anywhere but this machine, so any `meeting_url` that could name such a target is pointed at
the loopback before the request leaves (the test also runs the server with SIP off).
"""
import re

import schemathesis

_RTP_LOOPBACK = re.compile(r"rtp://127\.0\.0\.1:[0-9]{1,5}(\?[A-Za-z0-9=&_.-]*)?")
_SIP_LOOPBACK = re.compile(r"sips?:[A-Za-z0-9_.-]*@127\.0\.0\.1(:[0-9]{1,5})?")


def loopback_only(url):
    low = url.lower()
    if "rtp:" not in low and "sip:" not in low and "sips:" not in low:
        return url
    if _RTP_LOOPBACK.fullmatch(url) or _SIP_LOOPBACK.fullmatch(url):
        return url
    return "rtp://127.0.0.1:9?codec=pcmu" if "rtp:" in low else "sip:fuzz@127.0.0.1:9"


@schemathesis.hook
def before_call(context, case, **kwargs):
    body = case.body
    if case.method.upper() == "POST" and case.operation.path == "/api/call" and isinstance(body, dict):
        url = body.get("meeting_url")
        if isinstance(url, str):
            safe = loopback_only(url)
            if safe != url:
                body["meeting_url"] = safe
