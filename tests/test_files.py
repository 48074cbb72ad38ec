"""The shared writer and readers: atomic replacement with the umask's permissions, one error style for reads."""

from __future__ import annotations

import logging
import os
import stat

import numpy as np
import pytest
import torch

from cyclip.checkpoints import save_checkpoint
from cyclip.errors import BadSampleWarnings, DataError
from cyclip.evaluation.embeddings_file import save_embeddings
from cyclip.files import CsvReader, read_json, read_yaml_mapping, write_atomically, write_text_atomically


def umask_mode() -> int:
    """The mode `open()` gives a new file: 0666 minus the process umask (read here independently)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_every_writer_gives_the_permissions_of_an_ordinary_file(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert mode(plain) == umask_mode()
    written = [
        write_text_atomically(tmp_path / "a.txt", "text"),
        write_atomically(tmp_path / "b.bin", lambda file: file.write(b"\x00\x01")),
        save_embeddings(tmp_path / "c.npz", image_embeddings=np.eye(2, dtype=np.float32)),
    ]
    save_checkpoint({"w": torch.zeros(2)}, tmp_path / "d.pt")
    for path in [*written, tmp_path / "d.pt"]:
        assert mode(path) == mode(plain), path.name
    assert (tmp_path / "a.txt").read_text() == "text" and (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin", "c.npz", "d.pt", "plain.txt"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = write_text_atomically(tmp_path / "sub" / "out.json", "old")

    def half_then_fail(file):
        file.write(b"partial")
        raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_atomically(path, half_then_fail)
    with pytest.raises(KeyboardInterrupt):
        write_atomically(path, lambda file: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert path.read_text() == "old" and os.listdir(path.parent) == ["out.json"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"a": 1,\n "b": }', r"x\.json: not valid JSON at line 2 column 7: Expecting value; fix it$"),
        (b'{"a": "caf\xe9"}', r"x\.json: line 1 \(byte 0xe9\) is not valid UTF-8; re-encode the file as UTF-8"),
    ],
)
def test_json_problems_are_one_line_naming_the_place(tmp_path, content, message):
    path = tmp_path / "x.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DataError, match=message):
        read_json(path, fix="fix it")


def test_json_reader_drops_a_byte_order_mark_and_names_a_missing_file(tmp_path):
    (tmp_path / "bom.json").write_bytes(b'\xef\xbb\xbf{"a": [1, 2]}')
    assert read_json(tmp_path / "bom.json") == {"a": [1, 2]}
    with pytest.raises(DataError, match=r"absent\.json: superclass file not found"):
        read_json(tmp_path / "absent.json", "superclass file")
    with pytest.raises(DataError, match=r": results file is a folder, not a file"):
        read_json(tmp_path, "results file")


def test_yaml_problems_are_one_line_naming_the_place(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 2\nlr: [1, 2\n")
    with pytest.raises(DataError, match=r"c\.yaml: not valid YAML at line 3 column 1: ") as error:
        read_yaml_mapping(path, "config file")
    assert "\n" not in str(error.value)
    path.write_text("- a\n- b\n")
    with pytest.raises(DataError, match="expected a mapping of option: value, got list"):
        read_yaml_mapping(path, "config file")
    path.write_text("")
    assert read_yaml_mapping(path, "config file") == {}
    with pytest.raises(DataError, match=r"nope\.yaml: suite config not found"):
        read_yaml_mapping(tmp_path / "nope.yaml", "suite config")


def test_csv_rows_carry_the_line_they_start_on(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_bytes('\ufeff a \tb\n\n1\t"two\nlines"\n3\t4\n'.encode())
    with CsvReader(path, "\t") as table:
        assert table.header == ["a", "b"]
        assert list(table.rows()) == [(3, ["1", "two\nlines"]), (5, ["3", "4"])]
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with CsvReader(empty) as table:
        assert table.header == [] and list(table.rows()) == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"a,b\n1,2\n3\n", r"t\.csv: line 3 has 1 fields but the header has 2"),
        (b"a,b\n1,2\n\xff,4\n", r"t\.csv: line 3 \(byte 0xff\) is not valid UTF-8"),
        (
            b'a,b\n1,"open\n' + b"x" * 200_000 + b"\n",
            r"t\.csv: line 2: field larger than field limit .*; check the quoting",
        ),
    ],
)
def test_csv_problems_are_one_line_naming_the_line(tmp_path, content, message):
    path = tmp_path / "t.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message), CsvReader(path) as table:
        list(table.rows())


def test_bad_sample_warnings_stop_at_the_cap_and_keep_counting(caplog):
    warnings = BadSampleWarnings(logging.getLogger("cyclip.data"), limit=3)
    with caplog.at_level(logging.WARNING, logger="cyclip.data"):
        for index in range(5):
            warnings.warn(f"sample {index}: broken")
    messages = [record.getMessage() for record in caplog.records]
    assert messages[:2] == ["sample 0: broken", "sample 1: broken"]
    assert messages[2] == "sample 2: broken; further bad samples are counted without a warning"
    assert len(messages) == 3 and warnings.count == 5
