"""Who may talk to the S3 gateway: SigV4 signatures, checked with botocore.

The gateway rebuilds the request the client signed (method, raw path, raw
query, the headers it names in SignedHeaders, the payload hash it sent) as a
botocore `AWSRequest` and asks botocore's own `S3SigV4Auth` for the
signature; the two must match.  No signing code of ours: the same code that
signs boto3's requests checks them.

Credentials map to dpl's users (engine/auth.py): once the store has users,
an S3 access key is one of a user's tokens' ids and its secret key the one
`dpl auth create-token` printed beside the token; the request then acts as
that user, with that user's roles on each repo.  A key pair given to the
gateway itself (`--s3-access-key`/`--s3-secret-key`, or DPL_S3_ACCESS_KEY /
DPL_S3_SECRET_KEY) acts as an admin: for a store without users, or a
service that needs one.  With neither, the gateway runs open, and only on
loopback (as `dpl serve` does while the store has no user).
"""

from __future__ import annotations

import datetime
import hmac
import os
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

from .s3errors import S3Error

# How far a request's X-Amz-Date may stray from the server's clock (AWS allows 15 minutes).
SKEW = datetime.timedelta(minutes=15)
_AUTH = re.compile(r"AWS4-HMAC-SHA256\s+Credential=([^,\s]+)\s*,\s*SignedHeaders=([^,\s]+)\s*,\s*Signature=([0-9a-f]+)")
UNSIGNED = "UNSIGNED-PAYLOAD"


@dataclass(frozen=True)
class Keys:
    """The key pair given to the gateway (it acts as an admin); both None when none was given."""

    access_key: str | None = None
    secret_key: str | None = None

    @classmethod
    def configured(cls, access_key: str | None = None, secret_key: str | None = None) -> "Keys":
        access_key = access_key or os.environ.get("DPL_S3_ACCESS_KEY") or None
        secret_key = secret_key or os.environ.get("DPL_S3_SECRET_KEY") or None
        if bool(access_key) != bool(secret_key):
            from ..storage.errors import DplError

            raise DplError("The S3 gateway needs both an access key and a secret key, or neither.",
                           hint="Give --s3-access-key and --s3-secret-key (or DPL_S3_ACCESS_KEY and DPL_S3_SECRET_KEY).")
        return cls(access_key, secret_key)

    @property
    def open(self) -> bool:
        return self.access_key is None

    def secret(self, access_key: str) -> str | None:
        return self.secret_key if access_key == self.access_key else None


def verify(keys: Keys, auth, method: str, raw_path: str, raw_query: str, headers) -> tuple[str, object]:
    """Check the request's SigV4 signature (an Authorization header, or a
    presigned URL's query): (the payload hash the client signed, which the
    body must then match; who the request acts as, a dpl `Principal`, or
    None for an admin or an open gateway).  Raises S3Error (403) when the
    signature is wrong, expired or the key unknown."""
    payload = headers.get("x-amz-content-sha256", UNSIGNED)
    users = auth.active()
    if keys.open and not users:
        return payload, None
    header = headers.get("authorization")
    if header:
        match = _AUTH.match(header)
        if not match:
            raise S3Error("AccessDenied", "Only AWS Signature Version 4 (AWS4-HMAC-SHA256) is accepted.")
        credential, signed, signature = match.groups()
        stamp, query, presigned = headers.get("x-amz-date") or "", raw_query, False
    else:
        params = dict(parse_qsl(raw_query, keep_blank_values=True))
        if "X-Amz-Signature" not in params:
            if "AWSAccessKeyId" in params:
                raise S3Error("AccessDenied", "Presigned URLs must be signed with Signature Version 4 "
                              "(boto3: Config(signature_version='s3v4')).")
            raise S3Error("AccessDenied", "The request is not signed.")
        if params.get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256":
            raise S3Error("AccessDenied", "Only AWS Signature Version 4 (AWS4-HMAC-SHA256) is accepted.")
        credential, signed, signature = params.get("X-Amz-Credential", ""), params.get("X-Amz-SignedHeaders", "host"), params["X-Amz-Signature"]
        stamp, presigned = params.get("X-Amz-Date", ""), True
        # What was signed is the query without its signature.
        query = "&".join(p for p in raw_query.split("&") if not p.startswith("X-Amz-Signature="))
        payload = UNSIGNED
    try:
        access_key, day, region, service, terminator = credential.split("/")
    except ValueError:
        raise S3Error("AuthorizationHeaderMalformed", "The Credential of the signature is malformed.") from None
    secret, who = keys.secret(access_key), None
    if secret is None and users:
        found = auth.user_for_access_key(access_key)
        if found is not None:
            who, secret = found
    if secret is None:
        raise S3Error("InvalidAccessKeyId", "The access key is not one this gateway knows (nor a token's id, or the token expired).")
    try:
        when = datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        raise S3Error("AccessDenied", "The request has no valid X-Amz-Date.") from None
    now = datetime.datetime.now(datetime.timezone.utc)
    if presigned:
        expires = dict(parse_qsl(raw_query)).get("X-Amz-Expires", "")
        if not expires.isdigit() or now > when + datetime.timedelta(seconds=int(expires)) or when - now > SKEW:
            raise S3Error("AccessDenied", "The presigned URL has expired.")
    elif abs(now - when) > SKEW:
        raise S3Error("RequestTimeTooSkewed", "The request's time is too far from the server's.")
    if stamp[:8] != day:
        raise S3Error("AccessDenied", "The signature's date is not the request's.")
    expected = _signature(secret, access_key, region, service, stamp, method, raw_path, query,
                          {name: headers.get(name, "") for name in signed.split(";")}, presigned)
    if not hmac.compare_digest(expected, signature):
        raise S3Error("SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided. "
                      "Check your key and signing method.")
    return payload, who


def _signature(secret, access_key, region, service, stamp, method, raw_path, raw_query, signed_headers: dict,
               presigned: bool) -> str:
    from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    host = signed_headers.get("host", "localhost")
    request = AWSRequest(method=method, url=f"http://{host}{raw_path}" + (f"?{raw_query}" if raw_query else ""),
                         headers=signed_headers)
    request.context["timestamp"] = stamp
    # The query signer differs only in the payload it signs (UNSIGNED-PAYLOAD, as a URL has no body hash).
    auth = (S3SigV4QueryAuth if presigned else S3SigV4Auth)(Credentials(access_key, secret), service, region)
    canonical = auth.canonical_request(request)
    return auth.signature(auth.string_to_sign(request, canonical), request)
