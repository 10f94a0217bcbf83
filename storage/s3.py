"""The S3 chunk store: objects in a bucket.

`s3://BUCKET/PREFIX` keeps every object at `PREFIX/objects/ab/cdef...` (the
fan-out of the local store, `chunkstore.fanout`) in any S3 server boto3 can
talk to: AWS, MinIO, SeaweedFS, Ceph.  The endpoint and credentials come the
standard AWS way (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY,
AWS_PROFILE and the AWS config files); dpl has no credential scheme of its
own.  This store knows nothing of caches: the registry puts a
`cache.CachedStore` in front of it.

Trade-offs worth knowing:

* `put` is asynchronous.  Uploads run on a thread pool and `sync()` waits
  for them, so a write of thousands of chunks costs about one round trip per
  pool width, not one per chunk.  The engine moves a branch only after
  `sync()` returned, so a failed upload can never be referenced by a commit.
  `put` therefore returns True for "new to this write", and a chunk the
  bucket already holds is found by a HEAD in the worker (for objects big
  enough that a HEAD is cheaper than sending them again).
* What this store skips, it has checked against the bucket within the
  current write: an object already uploaded or found by a HEAD since the
  last `sync()`.  Nothing is remembered across writes, because a process
  may live across them (a Ray worker, a server) while the bucket behind the
  same address is emptied, recreated or swept by `gc`; a remembered "it is
  there" would let a job land a commit whose chunks are not.
* Errors: botocore retries transient failures itself (standard mode); around
  that, every request is retried with backoff for `retry_seconds` while the
  server cannot be reached (a restart), then becomes one `StorageUnavailable`.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Callable, Iterator
from urllib.parse import urlparse

from .chunkstore import ChunkStore, fanout, unfan
from .errors import Corruption, DplError, StorageUnavailable
from .pool import DaemonPool

DEFAULT_WORKERS = 32
DEFAULT_RETRY_SECONDS = 60.0
HEAD_BEFORE_PUT = 64 << 10  # smaller objects are cheaper to send again than to ask about
INFLIGHT_BYTES = 256 << 20  # memory held by queued uploads before `put` waits

_TRANSIENT_CODES = {"SlowDown", "Throttling", "RequestTimeout", "ServiceUnavailable", "InternalError", "RequestTimeTooSkewed"}


def parse_url(url: str) -> tuple[str, str]:
    """(bucket, prefix) of `s3://bucket/prefix`; the prefix may be empty."""
    parsed = urlparse(url)
    bucket = parsed.netloc
    if parsed.scheme != "s3" or not bucket or parsed.query or parsed.fragment:
        raise StorageUnavailable(f"{url!r} is not an S3 URL.", hint="Write s3://BUCKET or s3://BUCKET/PREFIX.")
    if not (3 <= len(bucket) <= 63) or not all(c.isalnum() or c in "-." for c in bucket):
        raise StorageUnavailable(f"{bucket!r} is not a valid S3 bucket name.", hint="Bucket names are 3-63 letters, digits, dots and hyphens.")
    return bucket, parsed.path.strip("/")


class S3ChunkStore(ChunkStore):
    tells_ages = True  # by the server's clock; a reused object keeps its age
    remote = True

    def __init__(self, url: str, *, workers: int = DEFAULT_WORKERS, retry_seconds: float | None = None):
        self.url = url.rstrip("/")
        self.bucket, prefix = parse_url(self.url)
        self.prefix = f"{prefix}/objects/" if prefix else "objects/"
        self.workers = workers
        if retry_seconds is None:
            retry_seconds = float(os.environ.get("DPL_S3_RETRY_SECONDS", DEFAULT_RETRY_SECONDS))
        self.retry_seconds = retry_seconds
        self._client = None
        self._client_pid = 0
        self._client_lock = threading.Lock()
        self._uploads = DaemonPool(workers, "dpl-s3-put")
        self._downloads = DaemonPool(workers, "dpl-s3-get")
        self._lock = threading.Condition()
        # This write's uploads (and HEAD-verified objects), done or not, until
        # sync(): the only "it is in the bucket" this store ever trusts.
        self._pending: dict[bytes, Future] = {}
        self._inflight = 0
        self._failure: DplError | None = None

    @classmethod
    def from_url(cls, url: str, *, root: str, options: dict, create: bool = False) -> "S3ChunkStore":
        store = cls(url)
        if create:
            store.check()  # a wrong URL, bucket or credential fails at init, not at the first put
        return store

    # ------------------------------------------------------------- plumbing

    @property
    def client(self):
        if self._client is None or self._client_pid != os.getpid():  # boto3 clients do not survive a fork
            with self._client_lock:
                if self._client is None or self._client_pid != os.getpid():
                    self._client = _make_client(self.workers)
                    self._client_pid = os.getpid()
        return self._client

    def _key(self, oid: bytes) -> str:
        return self.prefix + fanout(oid)

    def _call(self, fn: Callable, *args, budget: float | None = None, **kw):
        """One request, retried with backoff while the server cannot be reached."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        deadline = time.monotonic() + (self.retry_seconds if budget is None else budget)
        delay = 0.25
        while True:
            try:
                return fn(*args, **kw)
            except ClientError as e:
                if not _transient(e) or time.monotonic() + delay > deadline:
                    raise self._refused(e) from None
            except NoCredentialsError:
                raise StorageUnavailable(
                    f"No AWS credentials were found for the object store at {self.url}.",
                    hint="Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with ~/.aws/credentials.",
                ) from None
            except BotoCoreError as e:
                if time.monotonic() + delay > deadline:
                    raise self._unreachable(e) from None
            time.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, 4.0)

    def _unreachable(self, e) -> StorageUnavailable:
        return StorageUnavailable(
            f"The object store at {self.url} could not be reached ({e}).",
            hint="Check that the S3 server is up and AWS_ENDPOINT_URL points at it, then run the command again (a failed write changed nothing).",
        )

    def _refused(self, e) -> StorageUnavailable:
        code = e.response.get("Error", {}).get("Code", "")
        message = e.response.get("Error", {}).get("Message", "") or str(e)
        if code in ("NoSuchBucket",) or (code == "404" and e.operation_name == "HeadBucket"):
            return StorageUnavailable(
                f"The bucket {self.bucket!r} of the object store at {self.url} does not exist.",
                hint=f"Create it first (for example `aws s3 mb s3://{self.bucket}`).",
            )
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403", "ExpiredToken", "InvalidToken"):
            return StorageUnavailable(
                f"The object store at {self.url} refused the credentials ({code}: {message.rstrip('.')}).",
                hint="Check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE, and the bucket's permissions.",
            )
        if _transient(e):
            return self._unreachable(f"{code}: {message}")
        return StorageUnavailable(f"The object store at {self.url} refused a request ({code}: {message.rstrip('.')}).")

    def check(self) -> None:
        """Fail now, with a clear sentence, if the bucket cannot be used."""
        self._call(self.client.head_bucket, Bucket=self.bucket, budget=min(self.retry_seconds, 10.0))

    # ----------------------------------------------------------------- write

    def put(self, oid: bytes, data) -> bool:
        with self._lock:
            if self._failure is not None:
                raise self._failure  # fail fast: the rest of this write cannot land anyway
            if oid in self._pending:
                return False
        body = bytes(data)  # the caller's buffer is reused as soon as we return
        with self._lock:
            while self._inflight and self._inflight + len(body) > INFLIGHT_BYTES and self._failure is None:
                self._lock.wait()
            if self._failure is not None:
                raise self._failure
            self._inflight += len(body)
            self._pending[oid] = self._uploads.submit(self._upload, oid, body)
        return True

    def _upload(self, oid: bytes, body: bytes) -> None:
        try:
            if self._failure is not None:
                raise self._failure  # another upload of this write failed: do not retry for nothing
            key = self._key(oid)
            if len(body) < HEAD_BEFORE_PUT or not self._exists(key):
                self._call(self.client.put_object, Bucket=self.bucket, Key=key, Body=body)
        except DplError as e:
            with self._lock:
                if self._failure is None:
                    self._failure = e
            raise
        finally:
            with self._lock:
                self._inflight -= len(body)
                self._lock.notify_all()

    def sync(self) -> None:
        """Wait for every upload so far; raise if any of them failed.

        Uploads leave `_pending` only once finished, so a second thread's
        sync() waits for them too instead of returning early.
        """
        with self._lock:
            waiting = list(self._pending.items())
        failure: DplError | None = None
        for _, future in waiting:
            try:
                future.result()
            except DplError as e:
                failure = failure or e
            except Exception as e:  # an OS error or a bug in a worker: still one clear failure
                failure = failure or self._unreachable(e)
        with self._lock:
            for oid, future in waiting:
                if self._pending.get(oid) is future:
                    del self._pending[oid]
            if failure is not None:
                self._failure = None  # this write is over; a later one may try again
        if failure is not None:
            raise failure

    def delete(self, oid: bytes) -> None:
        self._settle(oid)  # an upload of it still under way would bring it back
        with self._lock:
            self._pending.pop(oid, None)
        self._call(self.client.delete_object, Bucket=self.bucket, Key=self._key(oid))

    # ------------------------------------------------------------------ read

    def _exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        def head():
            try:
                self.client.head_object(Bucket=self.bucket, Key=key)
                return True
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    return False
                raise

        return self._call(head)

    def has(self, oid: bytes) -> bool:
        with self._lock:
            if oid in self._pending:
                return True
        return self._exists(self._key(oid))

    def _fetch(self, oid: bytes) -> bytes:
        """The object's bytes from the bucket."""
        from botocore.exceptions import ClientError

        def get():
            try:
                return self.client.get_object(Bucket=self.bucket, Key=self._key(oid))["Body"].read()
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    return None
                raise

        data = self._call(get)
        if data is None:
            raise Corruption(f"Object {oid.hex()} is missing from the object store at {self.url}.", hint="Run `dpl fsck`.")
        return data

    def _settle(self, oid: bytes) -> None:
        """Wait for this write's upload of `oid`, if one is under way."""
        with self._lock:
            upload = self._pending.get(oid)
        if upload is not None:
            try:
                upload.result()
            except DplError:
                pass  # reported by sync(); the read goes to the bucket and fails there too

    def get(self, oid: bytes) -> bytes:
        self._settle(oid)  # an object put but not yet synced is read back (appends do that)
        return self._fetch(oid)

    def local_path(self, oid: bytes) -> None:
        return None  # no local file: a CachedStore in front gives one

    def iterate(self) -> Iterator[bytes]:
        for oid, _, _ in self.ages():
            yield oid

    def ages(self) -> Iterator[tuple[bytes, float, int]]:
        """(id, last modified as epoch seconds by the server's clock, size) of every object."""
        request = {"Bucket": self.bucket, "Prefix": self.prefix}
        while True:
            page = self._call(self.client.list_objects_v2, **request)
            for item in page.get("Contents", ()):
                oid = unfan(item["Key"][len(self.prefix) :])
                if oid is not None:
                    yield oid, item["LastModified"].timestamp(), item["Size"]
            if not page.get("IsTruncated"):
                return
            request["ContinuationToken"] = page["NextContinuationToken"]

    def scan(self) -> Iterator[tuple[bytes, bytes | None]]:
        """Every object with the bytes the bucket holds (not the cache's), in
        parallel; None for an object that vanished after it was listed."""
        window: deque[tuple[bytes, Future]] = deque()
        for oid in self.iterate():
            window.append((oid, self._downloads.submit(self._fetch, oid)))
            if len(window) >= 2 * self.workers:
                yield self._scanned(*window.popleft())
        while window:
            yield self._scanned(*window.popleft())

    @staticmethod
    def _scanned(oid: bytes, future: Future) -> tuple[bytes, bytes | None]:
        try:
            return oid, future.result()
        except Corruption:
            return oid, None


def _transient(e) -> bool:
    status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
    return status >= 500 or e.response.get("Error", {}).get("Code") in _TRANSIENT_CODES


def _make_client(workers: int):
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise StorageUnavailable("The s3 object store needs boto3 (not installed).", hint="pip install 'dpl[s3]'") from None
    config = Config(
        max_pool_connections=2 * workers + 4,  # uploads and downloads each have `workers` threads
        retries={"mode": "standard", "max_attempts": 4},
        connect_timeout=5,
        read_timeout=60,
    )
    # A session of its own: boto3's default session is not thread-safe to create clients from.
    return boto3.session.Session().client("s3", config=config)
