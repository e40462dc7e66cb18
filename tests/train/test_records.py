"""metrics.jsonl: a crash's torn last line is tolerated (and dropped on resume); anything
else malformed is one error naming the file and the line."""

import json
import logging

import pytest

from flowmatch.train.records import MetricsError, read_metrics, truncate_metrics


def _write(path, *lines, tail=b""):
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in lines) + tail)


def test_reads_records_and_an_absent_file_is_empty(tmp_path):
    path = tmp_path / "metrics.jsonl"
    assert read_metrics(path).records == []
    _write(path, {"step": 1, "loss": 2.0}, {"step": 2, "eval/w2": 0.5})
    log = read_metrics(path)
    assert [r["step"] for r in log.records] == [1, 2] and log.torn is None


def test_a_torn_last_line_is_reported_and_dropped_on_resume(tmp_path, caplog):
    path = tmp_path / "metrics.jsonl"
    _write(path, {"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}, tail=b'{"step": 3, "lo')
    log = read_metrics(path)
    assert [r["step"] for r in log.records] == [1, 2] and log.torn == b'{"step": 3, "lo'
    with caplog.at_level(logging.INFO, logger="flowmatch.train.records"):
        truncate_metrics(path, 1)
    assert "dropping an incomplete last line (15 bytes)" in caplog.text
    assert "dropping 1 records after step 1" in caplog.text
    assert path.read_text() == '{"step": 1, "loss": 2.0}\n'
    # A torn line of half a UTF-8 character is a torn line too.
    path.write_bytes(b'{"step": 1}\n{"name": "\xc3')
    assert read_metrics(path).torn == b'{"name": "\xc3'


def test_a_complete_last_record_without_newline_is_kept(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"step": 1}\n{"step": 2}')
    assert [r["step"] for r in read_metrics(path).records] == [1, 2]
    truncate_metrics(path, 5)
    assert path.read_bytes() == b'{"step": 1}\n{"step": 2}\n'  # appends start on a new line


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (
            b'{"step": 1}\n{"step": 2, ,}\n{"step": 3}\n',
            r"metrics.jsonl line 2 is not a JSON record",
        ),
        (b'{"step": 1}\n[1, 2]\n', r"metrics.jsonl line 2 is not a JSON object"),
        (
            b'{"step": 1}\n{"loss": 1.0}\n',
            r"metrics.jsonl line 2 has no integer 'step' \(got None\)",
        ),
        (b'{"step": "3"}\n', r"line 1 has no integer 'step' \(got '3'\)"),
        (b'{"step": true}\n', r"line 1 has no integer 'step' \(got True\)"),
        (b'{"step": 1}\n\xff\xfe\n{"step": 2}\n', r"line 2 is not a JSON record"),
        (b'{"loss": 1.0}', r"line 1 has no integer 'step'"),  # complete JSON: not torn
    ],
)
def test_malformed_records_are_one_error_naming_file_and_line(tmp_path, content, match):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(content)
    with pytest.raises(MetricsError, match=match):
        read_metrics(path)
    with pytest.raises(MetricsError, match=match):
        truncate_metrics(path, 10)
    assert path.read_bytes() == content  # refused before anything is rewritten


def test_a_directory_is_not_a_metrics_file(tmp_path):
    (tmp_path / "metrics.jsonl").mkdir()
    with pytest.raises(MetricsError, match="is a directory, not a metrics file"):
        read_metrics(tmp_path / "metrics.jsonl")
