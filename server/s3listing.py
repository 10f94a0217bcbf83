"""The S3 gateway's listings: ListObjects V1 and V2 over one commit's file index.

A page is cut from the commit's sorted paths by binary search: the marker
(V1) or continuation token (V2, the last key or common prefix returned,
base64) is where the next page starts, and a common prefix is skipped
whole, so paging a directory of 100,000 files costs one sorted list, not a
walk.  Objects carry the time of the commit they are read from: dpl keeps
no time per file.
"""

from __future__ import annotations

import base64
import bisect
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import quote
from xml.sax.saxutils import escape

from starlette.responses import Response

from .s3errors import S3Error
from .s3gateway import NS, _iso, _xml


def list_objects(gw, bucket: str, view, query: dict) -> Response:
    v2 = query.get("list-type") == "2"
    prefix, delimiter = query.get("prefix", ""), query.get("delimiter", "")
    try:
        max_keys = max(0, min(1000, int(query.get("max-keys", 1000))))
    except ValueError:
        raise S3Error("InvalidArgument", "max-keys is not a number.") from None
    if v2:
        token = query.get("continuation-token")
        after = _untoken(token) if token else query.get("start-after", "")
    else:
        after = query.get("marker", "")
    listing = _keys(gw.store, view)
    keys, sizes, hashes, when = listing.keys, listing.sizes, listing.hashes, listing.when
    contents, prefixes, truncated, last = _page(keys, prefix, delimiter, after, max_keys)
    url = query.get("encoding-type") == "url"
    enc = (lambda k: quote(k, safe="/")) if url else escape
    out = [f'<ListBucketResult xmlns="{NS}"><Name>{escape(bucket)}</Name><Prefix>{enc(prefix)}</Prefix>'
           f"<MaxKeys>{max_keys}</MaxKeys><IsTruncated>{'true' if truncated else 'false'}</IsTruncated>"]
    if delimiter:
        out.append(f"<Delimiter>{enc(delimiter)}</Delimiter>")
    if url:
        out.append("<EncodingType>url</EncodingType>")
    if v2:
        out.append(f"<KeyCount>{len(contents) + len(prefixes)}</KeyCount>")
        if query.get("continuation-token"):
            out.append(f"<ContinuationToken>{escape(query['continuation-token'])}</ContinuationToken>")
        if query.get("start-after"):
            out.append(f"<StartAfter>{enc(query['start-after'])}</StartAfter>")
        if truncated:
            out.append(f"<NextContinuationToken>{_token(last)}</NextContinuationToken>")
    else:
        out.append(f"<Marker>{enc(after)}</Marker>")
        if truncated:
            out.append(f"<NextMarker>{enc(last)}</NextMarker>")
    for i in contents:
        out.append(f"<Contents><Key>{enc(keys[i])}</Key><LastModified>{when}</LastModified><ETag>\"{hashes[i].hex()}\"</ETag>"
                   f"<Size>{sizes[i]}</Size><StorageClass>STANDARD</StorageClass></Contents>")
    out.extend(f"<CommonPrefixes><Prefix>{enc(p)}</Prefix></CommonPrefixes>" for p in prefixes)
    out.append("</ListBucketResult>")
    return _xml("".join(out))

@dataclass
class _Keys:
    """A commit's sorted keys, sizes and content hashes (never changing: commits do not)."""

    keys: list[str]
    sizes: list[int]
    hashes: list[bytes]
    when: str


_cache: OrderedDict = OrderedDict()  # (store, repo, commit) -> _Keys: paging a big listing reads the index once
_cache_lock = threading.Lock()
CACHED = 4


def _keys(store, view) -> _Keys:
    commit = view.pinned(store)
    if commit is None:
        return _Keys([], [], [], _iso(time.time()))
    key = (str(store.root), commit.repo, commit.id)
    with _cache_lock:
        found = _cache.get(key)
        if found is not None:
            _cache.move_to_end(key)
            return found
    table = store.files.commit_table(commit)
    # Index paths sort by UTF-8 bytes, which is code point order: the order of Python's strings too.
    found = _Keys([p[1:] for p in table["path"].to_pylist()], table["size"].to_pylist(), table["hash"].to_pylist(),
                  _iso(commit.finished or commit.created))
    with _cache_lock:
        _cache[key] = found
        while len(_cache) > CACHED:
            _cache.popitem(last=False)
    return found


def _page(keys: list[str], prefix: str, delimiter: str, after: str, max_keys: int):
    """One page of a listing: (indexes of keys, common prefixes, truncated, last entry returned).

    Every step is a binary search or one key returned, so a page costs its
    own size, whatever the size of the listing."""
    contents, prefixes = [], []
    end = bisect.bisect_left(keys, prefix + "\U0010ffff") if prefix else len(keys)
    i = bisect.bisect_left(keys, prefix) if prefix else 0
    if after:
        i = max(i, bisect.bisect_right(keys, after))
        if delimiter and after.endswith(delimiter):  # the last page ended on a common prefix: past what it rolled up
            i = max(i, bisect.bisect_left(keys, after + "\U0010ffff"))
    last = ""
    while i < end:
        if len(contents) + len(prefixes) >= max_keys:
            return contents, prefixes, True, last
        key = keys[i]
        cut = key.find(delimiter, len(prefix)) if delimiter else -1
        if cut >= 0:
            common = key[: cut + len(delimiter)]
            prefixes.append(common)
            last = common
            i = bisect.bisect_left(keys, common + "\U0010ffff")  # past every key the prefix rolls up
            continue
        contents.append(i)
        last = key
        i += 1
    return contents, prefixes, False, last


def _token(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode()


def _untoken(token: str) -> str:
    try:
        return base64.b64decode(token.encode(), altchars=b"-_", validate=True).decode()
    except ValueError:
        raise S3Error("InvalidArgument", "The continuation token is not one this gateway gave.") from None
