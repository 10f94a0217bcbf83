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
import time
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
    keys, sizes, hashes, when = _keys(gw.store, view, prefix)
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
        out.append(f"<Contents><Key>{enc(keys[i])}</Key><LastModified>{when}</LastModified><ETag>\"{hashes[i]}\"</ETag>"
                   f"<Size>{sizes[i]}</Size><StorageClass>STANDARD</StorageClass></Contents>")
    out.extend(f"<CommonPrefixes><Prefix>{enc(p)}</Prefix></CommonPrefixes>" for p in prefixes)
    out.append("</ListBucketResult>")
    return _xml("".join(out))

def _keys(store, view, prefix: str) -> tuple[list, list, list, str]:
    """The sorted keys under `prefix` (and their sizes, hashes), and the commit's time."""
    import pyarrow.compute as pc

    commit = view.pinned(store)
    if commit is None:
        return [], [], [], _iso(time.time())
    table = store.files.commit_table(commit)
    if prefix:
        table = table.filter(pc.starts_with(table["path"], "/" + prefix))
    keys = [p[1:] for p in table["path"].to_pylist()]
    hashes = [h.hex() for h in table["hash"].to_pylist()]
    return keys, table["size"].to_pylist(), hashes, _iso(commit.finished or commit.created)

def _page(keys: list[str], prefix: str, delimiter: str, after: str, max_keys: int):
    """One page of a listing: (indexes of keys, common prefixes, truncated, last entry returned)."""
    contents, prefixes = [], []
    i = bisect.bisect_right(keys, after) if after else 0
    if after and delimiter and after.endswith(delimiter):
        while i < len(keys) and keys[i].startswith(after):  # the page ended on a common prefix: skip what it rolled up
            i += 1
    last = ""
    while i < len(keys):
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
