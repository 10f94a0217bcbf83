"""`dpl://REPO@REF/path` through fsspec, read and written by the libraries
people use (pandas, pyarrow, polars, DuckDB), on a real store in tmp_path
and through a real `dpl serve`."""

from __future__ import annotations

import io
import json

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from dpl.client.fsspec import DplFileSystem
from dpl.engine import Store
from dpl.storage.errors import DplError, InvalidRef
from dpl.storage.local import LocalChunkStore

pytestmark = pytest.mark.timeout(120)

CSV_V1 = b"x,y\n1,a\n2,b\n"
CSV_V2 = b"x,y\n1,a\n2,b\n3,c\n"


@pytest.fixture(autouse=True)
def _no_outside_store(monkeypatch, tmp_path):
    """Each test says which store it acts on: none from the caller's environment."""
    for name in ("DPL_ADDRESS", "DPL_STORE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


@pytest.fixture
def root(tmp_path):
    path = Store.init(tmp_path / "store", durable=False).root
    store = Store.open(path)
    store.create_repo("data")
    store.put_bytes("data", "master", {"/x.csv": CSV_V1})
    store.put_bytes("data", "master", {"/x.csv": CSV_V2})
    store.close()
    return path


@pytest.fixture
def fs(root):
    return DplFileSystem(store=str(root), skip_instance_cache=True)


def commits(root) -> list:
    return Store.open(root).list_commits("data", "master")


def test_the_dpl_protocol_is_registered_through_fsspecs_entry_point():
    assert fsspec.get_filesystem_class("dpl") is DplFileSystem


def test_pandas_reads_a_branch_an_ancestor_and_a_commit_by_url(root, monkeypatch):
    options = {"store": str(root)}
    first = commits(root)[-1].id
    assert len(pd.read_csv("dpl://data@master/x.csv", storage_options=options)) == 3
    assert len(pd.read_csv("dpl://data@master^/x.csv", storage_options=options)) == 2
    assert len(pd.read_csv("dpl://data@master~1/x.csv", storage_options=options)) == 2
    assert len(pd.read_csv(f"dpl://data@{first[:12]}/x.csv", storage_options=options)) == 2
    # Found as the CLI finds it (DPL_STORE), on master when no ref is given.
    monkeypatch.setenv("DPL_STORE", str(root))
    assert pd.read_csv("dpl://data/x.csv")["y"].tolist() == ["a", "b", "c"]


def test_a_missing_file_is_a_file_not_found_that_says_what_to_do(fs):
    with pytest.raises(FileNotFoundError) as caught:
        pd.read_csv("dpl://data@master/nope.csv", storage_options={"store": fs._store_option})
    assert isinstance(caught.value, DplError)
    assert "data@master:/nope.csv does not exist" in str(caught.value) and caught.value.hint
    assert not fs.exists("data@master/nope.csv") and not fs.exists("nope@master/x.csv") and not fs.exists("data@nobranch/x.csv")


def test_listing_info_find_glob_and_ranged_cat(fs):
    fs.pipe({"data/a/1.csv": b"one", "data/a/b/2.csv": b"two!", "data/c.txt": b"c"})
    assert fs.ls("dpl://data@master", detail=False) == ["data@master/a", "data@master/c.txt", "data@master/x.csv"]
    assert fs.ls("", detail=False) == ["data"]
    assert fs.info("data@master/a") == {"name": "data@master/a", "size": 7, "type": "directory"}
    info = fs.info("data@master/a/b/2.csv")
    assert (info["type"], info["size"]) == ("file", 4)
    assert fs.isdir("data/a/b") and fs.isfile("data/c.txt") and fs.exists("data@master")
    assert fs.find("data@master/a") == ["data@master/a/1.csv", "data@master/a/b/2.csv"]
    assert fs.find("data", maxdepth=1, withdirs=True) == ["data/a", "data/c.txt", "data/x.csv"]
    assert fs.glob("data@master/**/*.csv") == ["data@master/a/1.csv", "data@master/a/b/2.csv", "data@master/x.csv"]
    assert fs.glob("data/a/*") == ["data/a/1.csv", "data/a/b"]
    assert fs.cat_file("data/x.csv", start=4, end=7) == CSV_V2[4:7]
    assert fs.cat_file("data/x.csv", start=-4) == CSV_V2[-4:]
    assert fs.cat_file("data@master~2/x.csv") == CSV_V1  # before the pipe and the second put
    fs.mkdir("data/empty")  # a directory exists when a file is put beneath it
    assert not fs.exists("data/empty")


def test_a_write_commits_on_close_and_a_transaction_makes_one_commit(fs, root):
    before = len(commits(root))
    with fsspec.open("dpl://data@master/new.csv", "wb", store=str(root)) as f:
        f.write(b"x\n1\n")
    assert len(commits(root)) == before + 1 and fs.cat("data/new.csv") == b"x\n1\n"

    with fs.transaction:
        for i in range(3):
            with fs.open(f"data@master/parts/{i}.txt", "wb") as f:
                f.write(str(i).encode() * 1000)
            assert not fs.exists(f"data@master/parts/{i}.txt")  # nothing lands before the block ends
        fs.pipe_file("data@master/parts/3.txt", b"3")
        fs.rm("data@master/new.csv")
    assert len(commits(root)) == before + 2
    assert fs.find("data/parts") == [f"data/parts/{i}.txt" for i in range(4)] and not fs.exists("data/new.csv")
    assert fs.cat("data@master^/new.csv") == b"x\n1\n"  # the commit before the transaction

    with pytest.raises(KeyError):
        with fs.transaction:
            fs.pipe_file("data/never.txt", b"no")
            fs.rm("data/parts", recursive=True)
            raise KeyError("the block fails")
    assert len(commits(root)) == before + 2 and fs.exists("data/parts/0.txt") and not fs.exists("data/never.txt")
    assert Store.open(root).open_commit("data", "master") is None

    fs.rm("data/parts", recursive=True)
    assert not fs.exists("data/parts") and len(commits(root)) == before + 3
    with fs.open("data/x.csv", "ab") as f:
        f.write(b"4,d\n")
    assert fs.cat("data/x.csv") == CSV_V2 + b"4,d\n"


def test_pandas_writes_by_url_and_a_wrong_store_is_named(root, tmp_path):
    options = {"store": str(root.parent)}  # the directory holding .dpl/ will do, as for the CLI
    (root.parent / ".dpl").symlink_to(root)
    frame = pd.DataFrame({"k": ["a", "b"], "v": [1.5, 2.5]})
    frame.to_csv("dpl://data@master/out/frame.csv", index=False, storage_options=options)
    frame.to_parquet("dpl://data@master/out/frame.parquet", storage_options=options)
    assert pd.read_csv("dpl://data@master/out/frame.csv", storage_options=options).equals(frame)
    assert pd.read_parquet("dpl://data@master/out/frame.parquet", storage_options=options).equals(frame)
    with pytest.raises(DplError, match="is not a dpl store"):
        pd.read_csv("dpl://data@master/x.csv", storage_options={"store": str(tmp_path / "elsewhere")})


def test_writes_go_to_branches_only(fs):
    for where in ("data@master^/y.csv", "data@master~1/y.csv", f"data@{fs.info('data@master')['commit']}/y.csv"):
        with pytest.raises(InvalidRef, match="names a commit"):
            fs.open(where, "wb")
    fs.pipe_file("data/dir/f", b"1")
    with pytest.raises(IsADirectoryError):
        fs.rm("data@master/dir")  # a directory goes only with recursive=True
    assert fs.exists("data/dir/f")
    with pytest.raises(FileExistsError):
        fs.open("data/x.csv", "xb")
    fs.pipe_file("data@dev/new-branch.txt", b"made")  # a new branch, as put-file makes one
    assert fs.cat("data@dev/new-branch.txt") == b"made"


def test_pyarrow_dataset_and_parquet_over_a_directory_of_parquet_files(fs, root):
    with fs.transaction:
        for i in range(3):
            with fs.open(f"data@master/table/part-{i}.parquet", "wb") as f:
                pq.write_table(pa.table({"k": [i] * 100, "v": np.arange(100) * i}), f)
    table = ds.dataset("data@master/table", filesystem=fs, format="parquet").to_table()
    assert table.num_rows == 300 and sorted(set(table["k"].to_pylist())) == [0, 1, 2]
    assert pq.read_table("data@master/table", filesystem=fs, columns=["v"])["v"].to_numpy().sum() == sum(np.arange(100) * i for i in range(3)).sum()
    assert pd.read_parquet("dpl://data@master/table", storage_options={"store": str(root)}).shape == (300, 2)


def test_polars_reads_csv_and_parquet(fs, root):
    import polars as pl

    fs.pipe_file("data/t.parquet", _parquet_bytes(pa.table({"v": [1, 2, 3]})))
    with fsspec.open("dpl://data@master/x.csv", store=str(root)) as f:
        assert pl.read_csv(f)["x"].sum() == 6
    assert pl.read_parquet("dpl://data@master/t.parquet", use_pyarrow=True, storage_options={"store": str(root)})["v"].sum() == 6
    lazy = pl.scan_pyarrow_dataset(ds.dataset("data@master~2/x.csv", filesystem=fs, format="csv"))  # before t.parquet and CSV_V2
    assert lazy.select(pl.col("x").sum()).collect().item() == 3


def test_duckdb_queries_dpl_urls_through_its_fsspec_registration(fs):
    import duckdb

    fs.pipe({f"data/events/{i}.parquet": _parquet_bytes(pa.table({"n": [i, i]})) for i in range(4)})
    con = duckdb.connect()
    con.register_filesystem(fs)
    assert con.sql("SELECT count(*), sum(n) FROM read_parquet('dpl://data@master/events/*.parquet')").fetchall() == [(8, 12)]
    assert con.sql("SELECT sum(x) FROM read_csv('dpl://data@master~2/x.csv')").fetchall() == [(3,)]


class CountingChunks(LocalChunkStore):
    """The real local chunk store, counting the objects read from it (read
    whole, or mapped from the file it names: dpl:// maps local chunks)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.got: list[bytes] = []

    def get(self, oid: bytes) -> bytes:
        self.got.append(oid)
        return super().get(oid)

    def local_path(self, oid: bytes) -> str:
        self.got.append(oid)
        return super().local_path(oid)


def test_a_footer_read_of_a_big_parquet_file_fetches_a_few_chunks(root, tmp_path):
    local = tmp_path / "big.parquet"
    rng = np.random.default_rng(7)
    pq.write_table(pa.table({"a": rng.random(2_000_000), "b": rng.random(2_000_000)}), local, compression="none",
                   row_group_size=250_000)
    data = local.read_bytes()
    assert len(data) > 30 << 20
    writer = Store.open(root)
    from dpl.engine.sources import Source

    writer.put_files("data", "master", [Source(str(local), "/big.parquet")])
    chunks = {r["chunk"] for r in writer.file_row("data", "master", "/big.parquet")["refs"]}
    assert len(chunks) >= 15

    store = Store.open(root)
    store.chunks = counting = CountingChunks(store.chunks.root, durable=False)
    fs = DplFileSystem(store=store, skip_instance_cache=True)
    with fs.open("data@master/big.parquet") as f:
        meta = pq.ParquetFile(f).metadata
    assert (meta.num_rows, meta.num_row_groups) == (2_000_000, 8)
    read = [oid for oid in counting.got if oid in chunks]
    assert 1 <= len(set(read)) <= 3, f"a footer read fetched {len(set(read))} of the file's {len(chunks)} chunks"

    counting.got.clear()
    assert fs.cat_file("data@master/big.parquet", start=len(data) // 2, end=len(data) // 2 + 100) == data[len(data) // 2 :][:100]
    assert len({oid for oid in counting.got if oid in chunks}) <= 2
    counting.got.clear()
    with fs.open("data@master/big.parquet") as f:  # one column of one row group: a small part of the file
        column = pq.ParquetFile(f).read_row_group(3, columns=["b"])["b"]
    assert column.num_chunks and len(column) == 250_000
    # Its 2 MB span two or three chunks; the read-ahead adds at most a chunk or two.
    assert len({oid for oid in counting.got if oid in chunks}) <= 5


def test_the_same_filesystem_through_a_server(tmp_path):
    from dplcli import dpl
    from test_serve import Server

    store = tmp_path / "served"
    dpl("init", store, "--no-fsync")
    server = Server(store, tmp_path)
    try:
        server.dpl("create-repo", "data")
        fs = DplFileSystem(address=server.url, skip_instance_cache=True)
        with fs.transaction:
            fs.pipe_file("data@master/x.csv", CSV_V1)
            local = tmp_path / "big.bin"
            local.write_bytes(np.random.default_rng(3).bytes(6 << 20))
            fs.put_file(str(local), "data@master/big.bin")
        fs.pipe_file("data@master/x.csv", CSV_V2)
        assert len(pd.read_csv("dpl://data@master/x.csv", storage_options={"address": server.url})) == 3
        assert len(pd.read_csv("dpl://data@master^/x.csv", storage_options={"address": server.url})) == 2
        assert fs.find("data") == ["data/big.bin", "data/x.csv"] and fs.info("data/big.bin")["size"] == 6 << 20

        received = []
        send = fs.store.http.send

        def counted(*args, **kwargs):  # the bytes of every answer the client takes
            answer = send(*args, **kwargs)
            received.append(int(answer.raw.headers.get("content-length") or 0))
            return answer

        fs.store.http.send = counted
        with fs.open("data/big.bin") as f:
            f.seek(-100, 2)
            assert f.read() == local.read_bytes()[-100:]
        assert sum(received) < 64 << 10, f"a tail read of a 6 MiB file received {sum(received)} bytes"
        with pytest.raises(FileNotFoundError, match="does not exist"):
            fs.cat_file("data@master/nope")

        def count() -> int:
            return len(json.loads(server.dpl("list-commit", "data", "-o", "json").stdout))

        before = count()
        with fs.transaction:  # a delete beside writes: a commit opened and finished over HTTP
            fs.rm("data@master/big.bin")
            fs.pipe_file("data@master/small.bin", b"small")
        assert fs.find("data") == ["data/small.bin", "data/x.csv"]
        assert count() == before + 1
        assert fs.exists("data@master^/big.bin")
    finally:
        assert server.stop() == 0


def _parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()
