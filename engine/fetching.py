"""Sources that are not plain local files: http(s) URLs, tar archives, and
files listing sources (pachctl's `put-file -f URL`, `--untar`, `-i FILE`).

Each is staged into a scratch directory first and then planned like any
local source (`sources.plan_sources`), so one write path stores them all and
`cp`'s rules for where a source lands hold for them too.  Staging costs one
local copy of a download or an archive's contents; the alternative, a second
streaming writer beside `Files.put_files`, would duplicate its chunking,
dedup and crash-safety for little gain at the sizes a CLI call moves.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from typing import Iterator

from .sources import Source, plan_sources
from ..storage.errors import SourceNotFound

URL_TIMEOUT = 60.0


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def read_source_list(path: str) -> list[str]:
    """The sources named one a line in `path` (`-i FILE`); blank lines and `#` comments are skipped."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.strip() for line in f]
    except OSError as e:
        raise SourceNotFound(f"The list of sources {path!r} cannot be read ({e.strerror}).",
                             hint="Give a text file with one file, directory or URL a line.") from None
    return [line for line in lines if line and not line.startswith("#")]


@contextmanager
def staged_sources(dest: str | None, sources: list[str], *, recursive: bool, untar: bool) -> Iterator[list[Source]]:
    """Plan `sources` for a put, downloading URLs and unpacking archives into a scratch directory kept until the put is done."""
    if not any(is_url(s) for s in sources) and not untar:
        yield plan_sources(dest, sources, recursive=recursive)
        return
    scratch = tempfile.mkdtemp(prefix="dpl-put-")
    try:
        local = []
        for i, src in enumerate(sources):
            where = os.path.join(scratch, str(i))
            os.mkdir(where)
            path = _download(src, where) if is_url(src) else src
            if untar:
                path = _unpack(path, where)
            local.append(path)
        yield plan_sources(dest, local, recursive=recursive or untar)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _download(url: str, where: str) -> str:
    """The URL's body, in a file named as the URL's last path segment."""
    name = os.path.basename(urllib.parse.urlparse(url).path.rstrip("/")) or "index"
    path = os.path.join(where, urllib.parse.unquote(name))
    try:
        with urllib.request.urlopen(url, timeout=URL_TIMEOUT) as response, open(path, "wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
    except urllib.error.HTTPError as e:
        raise SourceNotFound(f"{url} answered {e.code} {e.reason}; nothing was put.", hint="Check the URL.") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise SourceNotFound(f"{url} cannot be fetched ({reason}); nothing was put.", hint="Check the URL and the network.") from None
    return path


def _unpack(archive: str, where: str) -> str:
    """The archive's contents, in a directory named after it (without its extension)."""
    base = os.path.basename(archive)
    for ext in (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar"):
        if base.endswith(ext):
            base = base[: -len(ext)]
            break
    out = os.path.join(where, "untar", base or "archive")
    os.makedirs(out)
    try:
        with tarfile.open(archive) as tar:
            # The "data" filter refuses absolute paths, `..` and links out of the
            # directory: an archive cannot write outside it.
            tar.extractall(out, filter="data")
    except FileNotFoundError:
        raise SourceNotFound(f"Source {archive!r} does not exist.") from None
    except (tarfile.TarError, OSError) as e:
        raise SourceNotFound(f"{archive!r} is not a tar archive dpl can unpack ({e}).",
                             hint="Give a .tar, .tar.gz, .tar.bz2 or .tar.xz, or drop --untar.") from None
    return out
