"""S3's error answers: an XML body with a code and message, and the status S3 gives that code.

dpl's own refusals (`DplError`) become the S3 error a client expects (a
missing file is NoSuchKey, a missing repo or branch NoSuchBucket), with
dpl's sentence and hint as the message, so an S3 tool shows the same words
the `dpl` command would.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

from starlette.responses import Response

STATUS = {
    "AccessDenied": 403,
    "InvalidAccessKeyId": 403,
    "SignatureDoesNotMatch": 403,
    "RequestTimeTooSkewed": 403,
    "AuthorizationHeaderMalformed": 400,
    "XAmzContentSHA256Mismatch": 400,
    "InvalidArgument": 400,
    "InvalidRequest": 400,
    "MalformedXML": 400,
    "InvalidPart": 400,
    "InvalidBucketName": 400,
    "NoSuchBucket": 404,
    "NoSuchKey": 404,
    "NoSuchUpload": 404,
    "MethodNotAllowed": 405,
    "OperationAborted": 409,
    "InvalidRange": 416,
    "NotImplemented": 501,
    "ServiceUnavailable": 503,
    "InternalError": 500,
}


class S3Error(Exception):
    def __init__(self, code: str, message: str, resource: str = ""):
        super().__init__(message)
        self.code, self.message, self.resource = code, message, resource
        self.status = STATUS.get(code, 400)

    def response(self, method: str = "GET") -> Response:
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{self.code}</Code>'
                f"<Message>{escape(self.message)}</Message><Resource>{escape(self.resource)}</Resource></Error>")
        # A HEAD answer has no body: S3 clients read the code from the status alone.
        return Response(b"" if method == "HEAD" else body.encode(), status_code=self.status, media_type="application/xml")


_CODES = {
    "FileNotFound": "NoSuchKey",
    "RepoNotFound": "NoSuchBucket",
    "BranchNotFound": "NoSuchBucket",
    "CommitNotFound": "NoSuchBucket",
    "InvalidRef": "InvalidBucketName",
    "AmbiguousRef": "InvalidBucketName",
    "InvalidPath": "InvalidArgument",
    "Conflict": "OperationAborted",
    "PathCollision": "InvalidRequest",
    "StorageUnavailable": "ServiceUnavailable",
    "DiskFull": "ServiceUnavailable",
    "RepoInUse": "AccessDenied",
    "Forbidden": "AccessDenied",  # the user lacks the role (engine/auth.py names which)
    "Unauthenticated": "AccessDenied",  # a write to a pipeline's output branch, which only its jobs write
}


def from_dpl(error, resource: str = "") -> S3Error:
    """The S3 error for one of dpl's refusals (its class, or a base class, names it)."""
    code = next((_CODES[c.__name__] for c in type(error).__mro__ if c.__name__ in _CODES), None)
    code = code or "InvalidRequest"
    message = error.message + (f" {error.hint}" if getattr(error, "hint", None) else "")
    return S3Error(code, message, resource)
