"""fastgd.io.csv on hostile input (issue 10): damaged compressed streams, bare carriage
returns, padded numbers, inputs that are not regular files, very wide files, and a seeded
fuzz over byte mutations. Every failure is a CsvError naming the file, never a traceback
from the standard library, and never a quiet early end of a truncated stream."""

from __future__ import annotations

import bz2
import gzip
import importlib.util
import os
import random
import socket
import threading
import zlib

import numpy as np
import pytest

from fastgd.io import iter_csv, read_schema
from fastgd.io.csv import CsvError

HAS_ZSTD = importlib.util.find_spec("zstandard") is not None


def numeric_text(n_rows: int, seed: int = 0) -> str:
    """A header and ``n_rows`` rows of three columns a, b, y (values not very compressible,
    so a cut in the compressed bytes falls well inside the data)."""
    rng = np.random.default_rng(seed)
    rows = rng.standard_normal((n_rows, 3)).round(6)
    return "a,b,y\n" + "".join(f"{a!r},{b!r},{y!r}\n" for a, b, y in rows.tolist())


def compress(suffix: str, raw: bytes) -> bytes:
    if suffix == "gz":
        return gzip.compress(raw)
    if suffix == "bz2":
        return bz2.compress(raw, compresslevel=1)  # 100 kB blocks: cuts fall past the first
    import zstandard

    return zstandard.ZstdCompressor().compress(raw)


COMPRESSIONS = [
    ("gz", "gzip"),
    ("bz2", "bz2"),
    pytest.param("zst", "zstd", marks=pytest.mark.skipif(not HAS_ZSTD, reason="no zstandard")),
]


def read_all(path, **kwargs):
    return list(iter_csv(path, target="y", **kwargs))


# ----------------------------------------------------------------- compressed streams


@pytest.mark.parametrize(("suffix", "name"), COMPRESSIONS)
@pytest.mark.parametrize("prefetch", [True, False])
def test_truncated_stream_is_an_error_not_an_early_end(tmp_path, suffix, name, prefetch):
    text = numeric_text(40_000)
    packed = compress(suffix, text.encode())
    path = tmp_path / f"data.csv.{suffix}"
    path.write_bytes(packed[: len(packed) * 3 // 4])  # the schema's first lines survive
    schema = read_schema(path, target="y")
    assert schema.compression == name
    rows = 0
    with pytest.raises(CsvError, match=f"the {name} stream is truncated or corrupt") as info:
        for block in iter_csv(schema, prefetch=prefetch, block_rows=1000):
            rows += block.rows
    error = info.value
    assert str(path) in str(error) and rows < 40_000
    # the line named is where the stream broke: every row handed out lies before it
    assert rows + 1 <= error.line - 1 <= 40_001
    assert f"after line {error.line - 1}" in str(error)


@pytest.mark.parametrize(("suffix", "name"), COMPRESSIONS)
def test_cut_inside_the_first_lines_fails_in_read_schema(tmp_path, suffix, name):
    packed = compress(suffix, numeric_text(20).encode())
    path = tmp_path / f"data.csv.{suffix}"
    for cut in (len(packed) - 1, len(packed) // 2, 4):
        path.write_bytes(packed[:cut])
        with pytest.raises(CsvError, match=f"the {name} stream is truncated or corrupt") as info:
            read_schema(path, target="y")
        assert str(path) in str(info.value)


def test_four_bytes_of_gzip_magic(tmp_path):
    path = tmp_path / "tiny.csv.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00")
    with pytest.raises(CsvError, match="gzip stream is truncated or corrupt before its first"):
        read_schema(path)


@pytest.mark.parametrize(("suffix", "name"), COMPRESSIONS)
def test_corrupt_byte_inside_the_stream(tmp_path, suffix, name):
    text = numeric_text(5_000)
    packed = bytearray(compress(suffix, text.encode()))
    packed[len(packed) * 9 // 10] ^= 0xFF  # past the first lines, which read_schema reads
    path = tmp_path / f"data.csv.{suffix}"
    path.write_bytes(bytes(packed))
    # bz2 hands out a damaged block before its checksum fails: skipping the garbage rows
    # it may give, the stream error must still come
    with pytest.raises(CsvError, match=f"{name} stream is truncated or corrupt"):
        read_all(path, prefetch=False, on_bad_rows="skip")


@pytest.mark.skipif(not HAS_ZSTD, reason="no zstandard")
def test_zstd_reads_every_frame_of_a_multi_frame_file(tmp_path):
    first, second = numeric_text(300, seed=1), numeric_text(200, seed=2).split("\n", 1)[1]
    path = tmp_path / "frames.csv.zst"
    path.write_bytes(compress("zst", first.encode()) + compress("zst", second.encode()))
    blocks = read_all(path, block_rows=64)
    assert sum(b.rows for b in blocks) == 500
    plain = tmp_path / "frames.csv"
    plain.write_text(first + second)
    expected = np.loadtxt(plain, delimiter=",", skiprows=1)
    np.testing.assert_array_equal(np.concatenate([b.y for b in blocks]), expected[:, 2])


def test_crlf_gzip_still_reads(tmp_path):
    path = tmp_path / "crlf.csv.gz"
    path.write_bytes(gzip.compress(b"a,b,y\r\n1,2,3\r\n4,5,6\r\n"))
    blocks = read_all(path)
    np.testing.assert_array_equal(np.concatenate([b.X for b in blocks]), [[1, 2], [4, 5]])


def _damaged_gzip(kind: str, packed: bytes) -> bytes:
    if kind == "trailer":  # the size field of the trailer cut
        return packed[:-4]
    if kind == "crc":  # every line intact, the CRC flipped
        return packed[:-8] + bytes([packed[-8] ^ 0x01]) + packed[-7:]
    return packed[: len(packed) * 3 // 5]  # "cut": inside the deflate stream


@pytest.mark.parametrize("kind", ["trailer", "crc", "cut"])
@pytest.mark.parametrize(("prefetch", "block_rows"), [(True, 300), (False, 65536)])
def test_damaged_gzip_names_the_last_line_decoded(tmp_path, kind, prefetch, block_rows):
    """Issue 10 review: the message names the complete lines decoded before the failure
    (a damaged trailer fails after all 2001), not the last chunk boundary."""
    text = numeric_text(2_000).encode()
    packed = gzip.compress(text, mtime=0)
    damaged = _damaged_gzip(kind, packed)
    path = tmp_path / f"{kind}.csv.gz"
    path.write_bytes(damaged)
    # the raw deflate data after gzip's 10-byte header, trailer unchecked
    decoded = zlib.decompressobj(wbits=-15).decompress(damaged[10:])
    reached = decoded.count(b"\n")  # what any reader can decode before the damage
    assert reached == 2_001 if kind != "cut" else 1 < reached < 2_001
    rows = 0
    with pytest.raises(CsvError, match="gzip stream is truncated or corrupt") as info:
        for block in iter_csv(path, target="y", prefetch=prefetch, block_rows=block_rows):
            rows += block.rows
    assert f"after line {reached} (" in str(info.value)
    assert info.value.line == reached + 1 and rows <= reached - 1


# ----------------------------------------------------------------- carriage returns


def test_file_whose_lines_end_in_a_bare_carriage_return(tmp_path):
    path = tmp_path / "mac.csv"
    path.write_bytes(numeric_text(2_000).replace("\n", "\r").encode())
    for call in (lambda: read_schema(path), lambda: read_all(path, on_bad_rows="skip")):
        with pytest.raises(CsvError, match="bare carriage return") as info:
            call()
        assert "tr '\\r' '\\n'" in str(info.value) and info.value.line == 1


def test_bare_carriage_return_in_the_header(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"a,b\r,y\n1,2,3\n")
    with pytest.raises(CsvError, match="header holds a bare carriage return") as info:
        read_schema(path)
    assert info.value.line == 1


def test_bare_carriage_return_in_a_row(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"a,b,y\r\n1,2,3\r\n4,5\r6\r\n7,8,9\r\n10,11\r,12\r\n")
    with pytest.raises(CsvError, match="bare carriage return") as info:
        read_all(path)
    assert (info.value.line, info.value.column) == (3, "b")
    blocks = read_all(path, on_bad_rows="skip")
    np.testing.assert_array_equal(np.concatenate([b.X for b in blocks]), [[1, 2], [7, 8]])
    skipped: dict = {}
    for b in blocks:
        for reason, count in b.skipped.items():
            skipped[reason] = skipped.get(reason, 0) + count
    assert skipped == {"malformed": 2}
    assert [line for b in blocks for line in b.skipped_lines] == [3, 5]


@pytest.mark.parametrize(
    ("row", "column"),
    [(b"4,5,\r6", "y"), (b"4,\r5,6", "b"), (b"\r4,5,6", "a"), (b"4,5\r,6", "b"),
     (b"4,5,6\r\r", "y"), (b"4,5,6 \r 7", "y")],
)  # fmt: skip
@pytest.mark.parametrize("line_end", [b"\n", b"\r\n"])
def test_every_bare_carriage_return_in_a_read_column_is_refused(tmp_path, row, column, line_end):
    """Issue 10 review: a bare \r before a value was read as blank space on the fast path;
    wherever it stands in a read column it is refused, or skipped with on_bad_rows='skip'."""
    path = tmp_path / "cr.csv"
    path.write_bytes(line_end.join([b"a,b,y", b"1,2,3", row, b"7,8,9", b""]))
    with pytest.raises(CsvError, match="bare carriage return") as info:
        read_all(path)
    assert (info.value.line, info.value.column) == (3, column)
    blocks = read_all(path, on_bad_rows="skip")
    np.testing.assert_array_equal(np.concatenate([b.X for b in blocks]), [[1, 2], [7, 8]])
    assert [line for b in blocks for line in b.skipped_lines] == [3]
    assert sum(b.skipped.get("malformed", 0) for b in blocks) == 1


def test_carriage_return_in_a_dropped_text_column_is_harmless(tmp_path):
    path = tmp_path / "notes.csv"
    # line 4 has a missing value, so the chunk is diagnosed line by line
    path.write_bytes(b"a,note,y\n1,x\ry,2\n3,ok,4\nNA,ok,6\n")
    blocks = list(iter_csv(path, target="y", drop=["note"], on_bad_rows="skip"))
    np.testing.assert_array_equal(np.concatenate([b.X for b in blocks]), [[1], [3]])
    assert sum(b.skipped.get("missing", 0) for b in blocks) == 1


# ----------------------------------------------------------------- padded numbers


@pytest.mark.parametrize(
    "body",
    ["1, 2, 3\n4, 5, 6\n", "1,2,3 \n4 ,5,6\n", "1,\t2\t,3\n4,5,  6\n", ' 1,"2",3\n4,5,6\n'],
)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_numbers_padded_with_spaces_or_tabs(tmp_path, body, dtype):
    path = tmp_path / "padded.csv"
    path.write_text("a, b, y\n".replace(" ", "") + body)
    blocks = read_all(path, dtype=dtype)
    X = np.concatenate([b.X for b in blocks])
    assert X.dtype == dtype
    np.testing.assert_array_equal(X, [[1, 2], [4, 5]])
    np.testing.assert_array_equal(np.concatenate([b.y for b in blocks]), [3, 6])


def test_padded_numbers_beside_bad_rows_when_skipping(tmp_path):
    path = tmp_path / "padded.csv"
    path.write_text("a,b,y\n1, 2, 3\n4, x, 6\n7 ,8 , 9\n1, , 1\n")
    blocks = read_all(path, on_bad_rows="skip")
    np.testing.assert_array_equal(np.concatenate([b.X for b in blocks]), [[1, 2], [7, 8]])
    np.testing.assert_array_equal(np.concatenate([b.line_numbers for b in blocks]), [2, 4])
    with pytest.raises(CsvError, match="'x' is not a number") as info:
        read_all(path)
    assert (info.value.line, info.value.column) == (3, "b")


@pytest.mark.parametrize(
    ("cell", "match"),
    [
        ("\u0661\u0662", "is not a number"),  # Arabic-Indic digits: float() takes them
        ("1_000", "is not a number"),
        ('"3', "unclosed quote"),  # joins the rest of the line into one field
        ('"1" ', "check its quoting"),
    ],
)
def test_no_misdiagnosis_as_quoted_line_breaks(tmp_path, cell, match):
    path = tmp_path / "odd.csv"
    path.write_text(f"a,b,y\n1,2,3\n{cell},5,6\n7,8,9\n", encoding="utf-8")
    with pytest.raises(CsvError, match=match) as info:
        read_all(path)
    assert info.value.line == 3
    blocks = read_all(path, on_bad_rows="skip")
    np.testing.assert_array_equal(np.concatenate([b.X for b in blocks]), [[1, 2], [7, 8]])


def test_huge_text_cell_in_a_dropped_column(tmp_path):
    # over the csv module's 131,072-character field limit, in a chunk that is diagnosed
    path = tmp_path / "notes.csv"
    path.write_text("a,note,y\n1," + "z" * 200_000 + ",2\n3,ok,NA\n")
    blocks = list(iter_csv(path, target="y", drop=["note"], on_bad_rows="skip"))
    np.testing.assert_array_equal(np.concatenate([b.X for b in blocks]), [[1]])


# ----------------------------------------------------------------- not regular files


def call_in_thread(function):
    """Run ``function`` on a thread and return what it raised; fail (not hang) if it
    blocks, as opening a FIFO without a writer would."""
    outcome: list = []

    def run():
        try:
            function()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=20)
    assert not thread.is_alive(), "the call blocked"
    return outcome[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    for function in (lambda: read_schema(fifo), lambda: iter_csv(fifo, target="y")):
        error = call_in_thread(function)
        assert isinstance(error, CsvError), error
        assert "not a regular file but a pipe (FIFO)" in str(error)
        assert "save it to a file first" in str(error) and str(fifo) in str(error)


def test_schema_of_a_file_replaced_by_a_fifo(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    path = tmp_path / "data.csv"
    path.write_text(numeric_text(5))
    schema = read_schema(path, target="y")
    path.unlink()
    os.mkfifo(path)
    error = call_in_thread(lambda: iter_csv(schema))
    assert isinstance(error, CsvError) and "pipe (FIFO)" in str(error)


def test_directory_device_and_socket_are_refused(tmp_path):
    with pytest.raises(CsvError, match="not a regular file but a directory"):
        read_schema(tmp_path)
    if os.path.exists(os.devnull) and os.name == "posix":
        with pytest.raises(CsvError, match="not a regular file but a character device"):
            read_schema(os.devnull)
    if hasattr(socket, "AF_UNIX"):
        path = tmp_path / "s.csv"
        server = socket.socket(socket.AF_UNIX)
        try:
            server.bind(str(path))
        except OSError:  # e.g. a path too long for a socket
            pytest.skip("cannot bind a unix socket here")
        try:
            with pytest.raises(CsvError, match="not a regular file but a socket"):
                read_schema(path)
        finally:
            server.close()
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_schema(tmp_path / "missing.csv")


# ----------------------------------------------------------------- wide files


def test_wide_file_selection_by_name(tmp_path):
    n_cols = 3_000
    rng = np.random.default_rng(3)
    data = rng.integers(0, 100, (5, n_cols)).astype(np.float64)
    path = tmp_path / "wide.csv"
    header = ",".join(f"f{i}" for i in range(n_cols))
    path.write_text(header + "\n" + "".join(",".join(map(str, map(int, r))) + "\n" for r in data))
    order = [int(i) for i in rng.permutation(np.arange(1, n_cols))[:500]]
    schema = read_schema(path, target="f0", features=[f"f{i}" for i in order])
    assert schema.feature_indices == order and schema.target_index == 0
    blocks = list(iter_csv(schema, block_rows=2))
    np.testing.assert_array_equal(np.concatenate([b.X for b in blocks]), data[:, order])
    blocks = list(iter_csv(path, target=f"f{n_cols - 1}"))
    np.testing.assert_array_equal(blocks[0].X, data[:, :-1])


# ----------------------------------------------------------------- fuzz

FUZZ_SEED = 20261129
FUZZ_CASES = 200
#: Bytes a mutation inserts or writes: the CSV's own syntax and some trouble makers.
FUZZ_BYTES = b'\r\n,;"\t \x00\xff\xe9.-e0123456789aN'


def mutate(raw: bytes, rng: random.Random) -> bytes:
    data = bytearray(raw)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(5)
        at = rng.randrange(len(data)) if data else 0
        if kind == 0 and data:  # replace a byte
            data[at] = rng.choice(FUZZ_BYTES)
        elif kind == 1 and data:  # flip bits
            data[at] ^= 1 << rng.randrange(8)
        elif kind == 2:  # insert a byte
            data.insert(at, rng.choice(FUZZ_BYTES))
        elif kind == 3 and data:  # delete a run
            del data[at : at + rng.randint(1, 8)]
        else:  # truncate
            del data[at:]
    return bytes(data)


def test_fuzz_byte_mutations_give_blocks_or_csv_errors(tmp_path):
    rng = random.Random(FUZZ_SEED)
    clean = numeric_text(30, seed=4).encode()
    packed = gzip.compress(clean, mtime=0)
    outcomes = {"blocks": 0, "errors": 0}
    for case in range(FUZZ_CASES):
        compressed = case % 2 == 1
        path = tmp_path / (f"f{case}.csv.gz" if compressed else f"f{case}.csv")
        path.write_bytes(mutate(packed if compressed else clean, rng))
        on_bad_rows = "skip" if case % 4 < 2 else "error"
        try:
            blocks = list(
                iter_csv(
                    path, target="y", on_bad_rows=on_bad_rows, block_rows=7, prefetch=case % 3 == 0
                )
            )
        except CsvError as error:
            assert str(path) in str(error), (case, error)
            outcomes["errors"] += 1
            continue
        except ValueError as error:  # fastgd's own argument checks (e.g. a column twice)
            assert type(error) is ValueError and "column" in str(error), (case, error)
            outcomes["errors"] += 1
            continue
        for block in blocks:
            assert block.X.shape[0] == block.rows and np.isfinite(block.X).all(), case
        outcomes["blocks"] += 1
    assert outcomes["blocks"] > 20 and outcomes["errors"] > 20, outcomes
