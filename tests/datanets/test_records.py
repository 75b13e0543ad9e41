"""Reading, validating and hashing contributed records: every kind of bad input gets a clear reason."""

import hashlib
import json
import random
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasketch import MinHash, MinHashLSH

from datanets import flags, merkle, records


def read(path, fmt, schema="instruction"):
    return list(records.read_lines(path, fmt, schema))


def write(tmp_path, name, data: bytes | str):
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


GOOD = {"instruction": "Name the bone.", "input": "", "output": "Femur"}


def test_canonical_form_and_hash_are_documented_and_stable():
    record = records.make_record({"output": "  Cafe\u0301 ", "instruction": "Say it"}, "instruction")
    assert record.content == {"instruction": "Say it", "input": "", "output": "Café"}  # NFC, trimmed
    assert record.canonical == '{"input":"","instruction":"Say it","output":"Café"}'
    assert record.content_hash == hashlib.sha256(record.canonical.encode("utf-8")).hexdigest()


def test_jsonl_reports_each_bad_line_with_its_number(tmp_path):
    lines = [
        json.dumps(GOOD),
        "{not json",
        json.dumps({"instruction": "x"}),  # no output
        json.dumps({"instruction": "x", "output": "y", "extra": 1}),
        "",
        json.dumps([1, 2]),
        json.dumps({"instruction": 5, "output": "y"}),
    ]
    path = write(tmp_path, "a.jsonl", "\n".join(lines) + "\n")
    results = []
    for line in read(path, "jsonl"):
        try:
            reason = line.error or (records.make_record(line.value, "instruction") and None)
        except ValueError as error:
            reason = str(error)
        results.append((line.number, reason))
    assert results[0] == (1, None)
    assert results[1][0] == 2 and "malformed JSON" in results[1][1]
    assert results[2] == (3, "'output' is missing")
    assert results[3] == (4, "unexpected field(s): extra")
    assert results[4] == (6, "a record must be a JSON object, not list")
    assert results[5] == (7, "'instruction' must be a string, not int")


def test_invalid_utf8_line_is_reported(tmp_path):
    path = write(tmp_path, "a.jsonl", json.dumps(GOOD).encode() + b"\n" + b'{"instruction": "\xff\xfe"}\n')
    lines = read(path, "jsonl")
    assert lines[1].number == 2 and "invalid UTF-8" in lines[1].error


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("bom.jsonl", b"\xef\xbb\xbf" + json.dumps(GOOD).encode(), "byte-order mark"),
        ("empty.jsonl", b"", "empty"),
        ("blank.jsonl", b"\n\n  \n", "empty"),
        ("binary.jsonl", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
        ("not.parquet", b"hello world", "not a Parquet file"),
    ],
)
def test_whole_file_problems(tmp_path, name, data, message):
    path = write(tmp_path, name, data)
    with pytest.raises(records.FileError, match=message):
        read(path, records.detect_format(name))


def test_unsupported_extension():
    with pytest.raises(records.FileError, match="unsupported file type"):
        records.detect_format("records.xlsx")


def test_line_over_the_size_limit(tmp_path):
    big = json.dumps({"instruction": "x", "output": "y" * (records.MAX_RECORD_BYTES + 10)})
    path = write(tmp_path, "big.jsonl", json.dumps(GOOD) + "\n" + big + "\n")
    lines = read(path, "jsonl")
    assert lines[1].number == 2 and "over the" in lines[1].error


def test_deeply_nested_json(tmp_path):
    deep = "[" * 5000 + "]" * 5000
    nested = json.dumps({"instruction": {"a": {"b": {"c": {"d": {"e": {"f": "g"}}}}}}, "output": "y"})
    path = write(tmp_path, "deep.jsonl", deep + "\n" + nested + "\n")
    lines = read(path, "jsonl")
    assert all("nested deeper" in line.error for line in lines)


def test_json_array_streams_items_with_line_numbers(tmp_path):
    data = '[\n  {"instruction": "a", "output": "b"},\n  {"instruction": "c", "output": "d"},\n  {"oops": 1}\n]'
    lines = read(write(tmp_path, "a.json", data), "json")
    assert [line.number for line in lines] == [2, 3, 4]
    assert lines[0].value == {"instruction": "a", "output": "b"}


def test_json_array_small_chunks_and_errors(tmp_path):
    items = [{"instruction": f"q{i}", "output": "é" * i} for i in range(300)]
    path = write(tmp_path, "many.json", json.dumps(items, indent=1, ensure_ascii=False))
    lines = list(records.read_json_array(path, chunk_size=7))
    assert [line.value for line in lines] == items
    with pytest.raises(records.FileError, match="one JSON array"):
        read(write(tmp_path, "obj.json", '{"instruction": "a"}'), "json")
    with pytest.raises(records.FileError, match="line 3: malformed JSON"):
        read(write(tmp_path, "broken.json", '[\n{"instruction": "a", "output": "b"},\n{"instruction": }\n]'), "json")


def test_csv_columns_are_checked(tmp_path):
    good = write(tmp_path, "a.csv", 'instruction,input,output\nq,,a\n"multi\nline",,b\n')
    lines = read(good, "csv")
    assert [line.value["instruction"] for line in lines] == ["q", "multi\nline"]
    with pytest.raises(records.FileError, match="missing column\\(s\\): output"):
        read(write(tmp_path, "b.csv", "instruction,input\nq,x\n"), "csv")
    with pytest.raises(records.FileError, match="unexpected column\\(s\\): notes"):
        read(write(tmp_path, "c.csv", "instruction,output,notes\nq,a,n\n"), "csv")
    ragged = read(write(tmp_path, "d.csv", "instruction,output\nq,a\nq2\nq3,a3,extra\n"), "csv")
    assert [(line.number, line.error) for line in ragged[1:]] == [
        (3, "1 columns where the header has 2"),
        (4, "3 columns where the header has 2"),
    ]
    with pytest.raises(records.FileError, match="cannot be uploaded as CSV"):
        read(good, "csv", schema="chat")


def test_parquet_types_are_checked(tmp_path):
    path = tmp_path / "good.parquet"
    pq.write_table(pa.table({"instruction": ["q1", "q2"], "output": ["a1", "a2"]}), path)
    assert [line.value for line in read(path, "parquet")] == [
        {"instruction": "q1", "output": "a1"},
        {"instruction": "q2", "output": "a2"},
    ]
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"instruction": ["q1"], "output": [42]}), bad)
    with pytest.raises(records.FileError, match="column 'output' has type int64, expected string"):
        read(bad, "parquet")


def test_chat_schema():
    ok = records.make_record(
        {"messages": [{"role": "User", "content": "hi"}, {"role": "assistant", "content": "hello"}]}, "chat"
    )
    assert ok.content["messages"][0]["role"] == "user"
    with pytest.raises(ValueError, match="at least one user and one assistant"):
        records.make_record({"messages": [{"role": "user", "content": "hi"}]}, "chat")
    with pytest.raises(ValueError, match="not one of"):
        records.make_record({"messages": [{"role": "robot", "content": "x"}]}, "chat")


def test_personal_data_flags():
    text = (
        "Mail jane.doe@example.org or call +44 20 7946 0958. Card 4111 1111 1111 1111, "
        "not 4111 1111 1111 1112. IBAN GB82 WEST 1234 5698 7654 32. key AKIAIOSFODNN7EXAMPLE"
    )
    found = {(flag["kind"], text[flag["start"] : flag["end"]]) for flag in flags.personal_data_flags(text)}
    assert ("email", "jane.doe@example.org") in found
    assert ("phone", "+44 20 7946 0958") in found
    assert ("card_number", "4111 1111 1111 1111") in found
    assert not any(value == "4111 1111 1111 1112" for _, value in found)  # fails Luhn
    assert ("iban", "GB82 WEST 1234 5698 7654 32") in found
    assert ("secret", "AKIAIOSFODNN7EXAMPLE") in found
    assert flags.personal_data_flags("The femur is the longest bone in the human body.") == []


def test_flags_for_many_texts_equal_flags_one_by_one():
    """The chunk-wide prefilter never skips a text that has something to flag."""
    texts = [
        "The femur is the longest bone in the human body.",
        "Mail JANE.DOE@EXAMPLE.ORG today",
        "call +44 20 7946 0958 after six",
        "IBAN GB82 WEST 1234 5698 7654 32",
        "card 4111-1111-1111-1111",
        "PASSWORD = 'correct-horse-battery-staple'",
        "my Api_Key: abcdefghijklmnopqrstuvwx",
        "token ghp_" + "a" * 36,
        "-----BEGIN RSA PRIVATE KEY-----",
        "Zahlen 1 2 3 4 5 6 7 8 9 verstreut, keine Nummer",
        "ünïcode text with an e-mail: ünï@example.com and ٣٤٥٦٧٨٩٠١٢ digits",
        "",
    ]
    assert flags.personal_data_flags_many(texts) == [flags.personal_data_flags(text) for text in texts]
    assert any(flags.personal_data_flags_many(texts)[1:9])


CASE = (
    "The patient, a 54-year-old man, presented to the emergency department with crushing chest pain "
    "radiating to the left arm and jaw, sweating and nausea that began forty minutes earlier while he "
    "was shovelling snow. An ECG showed ST elevation in the inferior leads, so he was given aspirin, "
    "heparin and was taken to the catheter laboratory for primary angioplasty of the right coronary artery."
)


def test_near_duplicates_share_a_band_and_distinct_texts_do_not():
    near = CASE.replace("shovelling snow", "clearing snow")
    other = "a recipe for sourdough bread needs flour water salt and patience"
    case, near, other = (set(keys) for keys in flags.band_keys(flags.signatures([CASE, near, other])))
    assert case & near
    assert not case & other


def datasketch_minhash(text: str) -> np.ndarray:
    """One datasketch MinHash per record, hashing each shingle with the one-at-a-time definition."""
    words = [word.encode() for word in re.findall(r"\w+", text.lower())]
    shingles = {tuple(words[i : i + 5]) for i in range(max(1, len(words) - 4))}
    minhash = MinHash(num_perm=64, seed=1, scheme="affine32", hashfunc=flags.shingle_hash)
    minhash.update_batch(list(shingles))
    return minhash.hashvalues


def test_batch_signatures_equal_datasketch_minhash_and_lsh_banding(monkeypatch):
    rng = random.Random(3)
    texts = [CASE, "", "one", "one two three four five", "one two three four five six", "Ünïcödé wörds ß À x_y 9"]
    texts += ["".join(rng.choice("ab _-\t\n\x1c.Z9é") for _ in range(rng.randint(0, 60))) for _ in range(300)]
    texts.append(" ".join(["word"] * 20_000))  # a long record is permuted in a group of its own
    batch = flags.signatures(texts)
    for text, signature in zip(texts, batch, strict=True):
        assert (signature == datasketch_minhash(text)).all(), text
    monkeypatch.setattr(flags, "_TEXT_BYTES", 100)  # many numpy passes of a few records each
    assert (flags.signatures(texts) == batch).all()
    lsh = MinHashLSH(threshold=flags.THRESHOLD, num_perm=flags.NUM_PERM)
    assert (lsh.b, lsh.r) == (flags.BANDS, flags.ROWS)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 33])
def test_merkle_inclusion_proofs(n):
    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)]
    root = merkle.merkle_root(hashes)
    assert root == merkle.merkle_root(list(reversed(hashes)))  # leaf order is defined, not input order
    for target in hashes:
        assert merkle.verify_inclusion(target, merkle.inclusion_proof(hashes, target), root)
    assert merkle.inclusion_proofs(hashes, hashes[::2]) == {t: merkle.inclusion_proof(hashes, t) for t in hashes[::2]}
    outsider = hashlib.sha256(b"outsider").hexdigest()
    assert not merkle.verify_inclusion(outsider, merkle.inclusion_proof(hashes, hashes[0]), root)
    assert merkle.merkle_root([]) == merkle.EMPTY_ROOT


def test_token_counts_of_many_texts_at_once_equal_the_regex_one_by_one():
    from datanets.prepare import TOKEN, token_counts

    rng = random.Random(5)
    texts = ["", "Hello, world!", "a_b c-d\t\x1c\x1f e\x7f\x00 (x)", "naïve café, déjà vu.", "", "end_"]
    texts += [
        "".join(rng.choice("aZ9_ \t\n\x0b\x1c\x1f.,-()\x00\x7fé") for _ in range(rng.randint(0, 50)))
        for _ in range(500)
    ]
    assert token_counts(texts) == [len(TOKEN.findall(text)) for text in texts]
    assert token_counts(["x"]) == [1] and token_counts([]) == []


def test_canonical_bytes_equal_the_documented_json_for_every_character():
    text = "".join(chr(i) for i in range(0x10000) if not 0xD800 <= i < 0xE000) + "\U0001f600"
    content = {"messages": [{"role": "user", "content": text}], "b": text, "a": ""}
    assert records.canonical_bytes(content) == records.canonical_json(content).encode()
    with pytest.raises(UnicodeEncodeError):  # a lone surrogate is refused, with the same error as before
        records.make_record({"text": "\ud800"}, "text")
