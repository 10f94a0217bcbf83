"""The S3 chunk store: objects in a bucket, reads through a local LRU cache.

`s3://BUCKET/PREFIX` keeps every object at `PREFIX/objects/ab/cdef...` (the
fan-out of the local store) in any S3 server boto3 can talk to: AWS, MinIO,
SeaweedFS, Ceph.  The endpoint and credentials come the standard AWS way
(AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE and
the AWS config files); dpl has no credential scheme of its own.

Trade-offs worth knowing:

* `put` is asynchronous.  Uploads run on a thread pool and `sync()` waits
  for them, so a write of thousands of chunks costs about one round trip per
  pool width, not one per chunk.  The engine moves a branch only after
  `sync()` returned, so a failed upload can never be referenced by a commit.
  `put` therefore returns True for "new to this process", and a chunk the
  bucket already holds is found by a HEAD in the worker (for objects big
  enough that a HEAD is cheaper than sending them again).
* The cache (`cache/objects/ab/cdef...` under the store directory) only ever
  holds objects the bucket is known to hold: an object enters it after its
  upload or download succeeded.  That makes a cache hit a valid answer to
  `has()` (cheap dedup across processes) and lets `local_path` hand Arrow a
  file to memory-map.  Cached bytes are re-hashed before they are trusted, so
  a damaged cache file is dropped and fetched again, never reported as
  damaged data.
* Errors: botocore retries transient failures itself (standard mode); around
  that, every request is retried with backoff for `retry_seconds` while the
  server cannot be reached (a restart), then becomes one `StorageUnavailable`.
"""

from __future__ import annotations

import os
import queue
import random
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import Future
from typing import Callable, Iterable, Iterator
from urllib.parse import urlparse

from .chunkstore import object_id
from .errors import Corruption, DplError, StorageUnavailable

DEFAULT_CACHE_BYTES = 2 << 30
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


class _Pool:
    """A fixed set of daemon worker threads.

    Not `ThreadPoolExecutor`: its threads are joined at interpreter exit, so
    a command failing with uploads still queued would sit through their
    retries before exiting.  Unsynced uploads are worthless (no commit refers
    to them), so daemon threads that die with the process are right here.
    """

    def __init__(self, size: int, name: str):
        self._size = size
        self._name = name
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def submit(self, fn: Callable, *args) -> Future:
        if self._pid != os.getpid():  # a forked child inherits the list, not the threads
            self.__init__(self._size, self._name)
        future: Future = Future()
        self._queue.put((future, fn, args))
        if len(self._threads) < self._size:
            with self._lock:
                if len(self._threads) < self._size:
                    t = threading.Thread(target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True)
                    t.start()
                    self._threads.append(t)
        return future

    def _work(self) -> None:
        while True:
            future, fn, args = self._queue.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as e:  # handed to whoever waits on the future
                future.set_exception(e)


class _Cache:
    """A size-bounded LRU directory of objects, shared by every process of a store.

    Recency is the file's mtime (touched on use), so processes share one
    order; each process keeps its own running total and evicts the least
    recently used files when an insert takes it over the bound.  A file
    evicted under another process's feet is simply fetched again (and an
    open memory map of it stays valid).
    """

    def __init__(self, root: str, max_bytes: int):
        self.root = root
        self.objects = os.path.join(root, "objects")
        self.tmp = os.path.join(root, "tmp")
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._entries: OrderedDict[bytes, int] | None = None  # oid -> size, oldest first; loaded lazily
        self._total = 0

    def path(self, oid: bytes) -> str:
        h = oid.hex()
        return os.path.join(self.objects, h[:2], h[2:])

    def read(self, oid: bytes) -> bytes | None:
        """The cached bytes of `oid` if present and intact."""
        path = self.path(oid)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        if object_id(data) != oid:
            self.discard(oid)
            return None
        self.touch(oid, path)
        return data

    def contains(self, oid: bytes) -> bool:
        return os.path.exists(self.path(oid))

    def touch(self, oid: bytes, path: str | None = None) -> None:
        try:
            os.utime(path or self.path(oid))
        except FileNotFoundError:
            return
        with self._lock:
            if self._entries is not None and oid in self._entries:
                self._entries.move_to_end(oid)

    def insert(self, oid: bytes, data) -> str | None:
        """Store `data` (tmp file + rename); None if it can never fit."""
        size = len(data)
        if size > self.max_bytes // 4:
            return None
        path = self.path(oid)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.makedirs(self.tmp, exist_ok=True)
        tmp = os.path.join(self.tmp, f"{oid.hex()}.{os.getpid()}.{threading.get_ident()}")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        with self._lock:
            entries = self._load()
            self._total += size - entries.pop(oid, 0)
            entries[oid] = size
            if self._total > self.max_bytes:
                self._evict(int(self.max_bytes * 0.9))
        return path

    def discard(self, oid: bytes) -> None:
        try:
            os.unlink(self.path(oid))
        except FileNotFoundError:
            pass
        with self._lock:
            if self._entries is not None:
                self._total -= self._entries.pop(oid, 0)

    def _load(self) -> OrderedDict:
        if self._entries is None:
            found = []
            if os.path.isdir(self.objects):
                for fan in os.scandir(self.objects):
                    if not fan.is_dir():
                        continue
                    for entry in os.scandir(fan.path):
                        try:
                            st = entry.stat()
                            found.append((st.st_mtime, bytes.fromhex(fan.name + entry.name), st.st_size))
                        except (OSError, ValueError):
                            continue
            found.sort()
            self._entries = OrderedDict((oid, size) for _, oid, size in found)
            self._total = sum(size for _, _, size in found)
            self._drop_stale_tmp()
        return self._entries

    def _drop_stale_tmp(self) -> None:
        """Temporary files a killed process left (named oid.pid.thread)."""
        try:
            names = os.listdir(self.tmp)
        except FileNotFoundError:
            return
        for name in names:
            parts = name.split(".")
            if len(parts) == 3 and parts[1].isdigit() and not os.path.exists(f"/proc/{parts[1]}"):
                try:
                    os.unlink(os.path.join(self.tmp, name))
                except OSError:
                    pass

    def _evict(self, target: int) -> None:
        while self._total > target and self._entries:
            oid, size = self._entries.popitem(last=False)
            self._total -= size
            try:
                os.unlink(self.path(oid))
            except FileNotFoundError:
                pass


class S3ChunkStore:
    def __init__(
        self,
        url: str,
        cache_dir: str,
        *,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        workers: int = DEFAULT_WORKERS,
        retry_seconds: float | None = None,
    ):
        self.url = url.rstrip("/")
        self.bucket, prefix = parse_url(self.url)
        self.prefix = f"{prefix}/objects/" if prefix else "objects/"
        self.cache = _Cache(cache_dir, cache_bytes)
        self.workers = workers
        if retry_seconds is None:
            retry_seconds = float(os.environ.get("DPL_S3_RETRY_SECONDS", DEFAULT_RETRY_SECONDS))
        self.retry_seconds = retry_seconds
        self._client = None
        self._client_pid = 0
        self._client_lock = threading.Lock()
        self._uploads = _Pool(workers, "dpl-s3-put")
        self._downloads = _Pool(workers, "dpl-s3-get")
        self._lock = threading.Condition()
        self._known: set[bytes] = set()  # in the bucket, for certain
        self._pending: dict[bytes, Future] = {}  # uploads not yet synced
        self._fetching: dict[bytes, Future] = {}  # downloads into the cache
        self._verified: set[bytes] = set()  # cache files re-hashed by this process
        self._inflight = 0
        self._failure: DplError | None = None

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
        h = oid.hex()
        return f"{self.prefix}{h[:2]}/{h[2:]}"

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
            if oid in self._known or oid in self._pending:
                return False
        if self.cache.contains(oid):  # the cache only holds objects the bucket holds
            with self._lock:
                self._known.add(oid)
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
            try:
                self.cache.insert(oid, body)
            except OSError:
                pass  # a cache that cannot be written costs speed, not data
            with self._lock:
                self._known.add(oid)
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
        self.cache.discard(oid)
        with self._lock:
            self._known.discard(oid)
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
            if oid in self._known or oid in self._pending:
                return True
        if self.cache.contains(oid) or self._exists(self._key(oid)):
            with self._lock:
                self._known.add(oid)
            return True
        return False

    def _fetch(self, oid: bytes) -> bytes:
        """The object's bytes from the bucket, whatever the cache holds."""
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

    def _download(self, oid: bytes) -> bytes:
        data = self._fetch(oid)
        if object_id(data) == oid:  # damaged bytes are returned (for the caller to report), never cached
            try:
                self.cache.insert(oid, data)
            except OSError:
                pass
            with self._lock:
                self._known.add(oid)
                self._verified.add(oid)
        return data

    def _download_once(self, oid: bytes) -> Future:
        """The one download of `oid` in flight in this process (started if need be)."""
        with self._lock:
            future = self._fetching.get(oid)
            if future is None:
                future = self._downloads.submit(self._download, oid)
                self._fetching[oid] = future
                future.add_done_callback(lambda _f, oid=oid: self._forget_fetch(oid))
        return future

    def _forget_fetch(self, oid: bytes) -> None:
        with self._lock:
            self._fetching.pop(oid, None)

    def _settle(self, oid: bytes) -> None:
        """Wait for this process's upload or download of `oid`, if one is under way."""
        with self._lock:
            upload = self._pending.get(oid)
            download = self._fetching.get(oid)
        if upload is not None:
            try:
                upload.result()
            except DplError:
                pass  # reported by sync(); the read goes to the bucket and fails there too
        elif download is not None:
            download.result()

    def get(self, oid: bytes) -> bytes:
        self._settle(oid)  # an object put but not yet synced is read back (appends do that)
        data = self.cache.read(oid)
        if data is not None:
            return data
        return self._download(oid)

    def prefetch(self, oids: Iterable[bytes]) -> None:
        """Start downloading, in parallel, every object of `oids` not cached yet.

        Optional (the engine calls it through `chunkstore.prefetch`); a later
        `get` or `local_path` of one of them waits for its download.  Errors
        surface there, not here.
        """
        for oid in dict.fromkeys(oids):
            if not self.cache.contains(oid):
                self._download_once(oid)

    def local_path(self, oid: bytes) -> str | None:
        self._settle(oid)
        path = self.cache.path(oid)
        if oid in self._verified and os.path.exists(path):
            self.cache.touch(oid, path)
            return path
        self.get(oid)  # re-hashes the cached copy, or downloads and caches the object
        if not os.path.exists(path):
            return None  # too big for the cache, evicted meanwhile, or damaged in the bucket
        with self._lock:
            self._verified.add(oid)
        return path

    def iterate(self) -> Iterator[bytes]:
        for oid, _, _ in self.ages():
            yield oid

    def ages(self) -> Iterator[tuple[bytes, float, int]]:
        """(id, last modified as epoch seconds by the server's clock, size) of every object."""
        request = {"Bucket": self.bucket, "Prefix": self.prefix}
        while True:
            page = self._call(self.client.list_objects_v2, **request)
            for item in page.get("Contents", ()):
                name = item["Key"][len(self.prefix) :].replace("/", "")
                if len(name) == 32:
                    try:
                        yield bytes.fromhex(name), item["LastModified"].timestamp(), item["Size"]
                    except ValueError:
                        continue
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
        raise StorageUnavailable("S3 object stores need boto3, which is not installed.", hint="pip install 'dpl[s3]'") from None
    config = Config(
        max_pool_connections=2 * workers + 4,  # uploads and downloads each have `workers` threads
        retries={"mode": "standard", "max_attempts": 4},
        connect_timeout=5,
        read_timeout=60,
    )
    # A session of its own: boto3's default session is not thread-safe to create clients from.
    return boto3.session.Session().client("s3", config=config)
