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
    """Check the request's SigV4 signature: (the payload hash the client
    signed, which the body must then match; who the request acts as, a dpl
    `Principal`, or None for an admin or an open gateway).  Raises S3Error
    (403) when the signature is wrong or the key unknown."""
    payload = headers.get("x-amz-content-sha256", UNSIGNED)
    users = auth.active()
    if keys.open and not users:
        return payload, None
    header = headers.get("authorization")
    if not header:
        if "X-Amz-Signature=" in raw_query:
            raise S3Error("AccessDenied", "Presigned URLs are not supported by the dpl S3 gateway.")
        raise S3Error("AccessDenied", "The request is not signed.")
    match = _AUTH.match(header)
    if not match:
        raise S3Error("AccessDenied", "Only AWS Signature Version 4 (AWS4-HMAC-SHA256) is accepted.")
    credential, signed, signature = match.groups()
    try:
        access_key, day, region, service, terminator = credential.split("/")
    except ValueError:
        raise S3Error("AuthorizationHeaderMalformed", "The Credential of the Authorization header is malformed.") from None
    secret, who = keys.secret(access_key), None
    if secret is None and users:
        found = auth.user_for_access_key(access_key)
        if found is not None:
            who, secret = found
    if secret is None:
        raise S3Error("InvalidAccessKeyId", "The access key is not one this gateway knows (nor a token's id, or the token expired).")
    stamp = headers.get("x-amz-date") or ""
    try:
        when = datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        raise S3Error("AccessDenied", "The request has no valid X-Amz-Date header.") from None
    if abs(datetime.datetime.now(datetime.timezone.utc) - when) > SKEW or stamp[:8] != day:
        raise S3Error("RequestTimeTooSkewed", "The request's time is too far from the server's.")
    expected = _signature(secret, access_key, region, service, stamp, method, raw_path, raw_query,
                          {name: headers.get(name, "") for name in signed.split(";")})
    if not hmac.compare_digest(expected, signature):
        raise S3Error("SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided. "
                      "Check your key and signing method.")
    return payload, who


def _signature(secret, access_key, region, service, stamp, method, raw_path, raw_query, signed_headers: dict) -> str:
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    host = signed_headers.get("host", "localhost")
    request = AWSRequest(method=method, url=f"http://{host}{raw_path}" + (f"?{raw_query}" if raw_query else ""),
                         headers=signed_headers)
    request.context["timestamp"] = stamp
    auth = S3SigV4Auth(Credentials(access_key, secret), service, region)
    canonical = auth.canonical_request(request)
    return auth.signature(auth.string_to_sign(request, canonical), request)
