"""The span index finds the maximal spans of an answer that occur in the records, and no others."""

from serving.span_index import SpanIndex, build


def test_spans_map_to_their_records_and_never_cross_a_record(tmp_path):
    records = [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [5, 6, 7, 8, 9, 10, 11, 12], [20, 21, 22, 23, 24], [1, 2, 3]]
    assert build(records, tmp_path) == {"records": 4, "tokens": 26}
    index = SpanIndex(tmp_path)
    answer = [99, 5, 6, 7, 8, 9, 10, 11, 12, 13, 20, 21, 22, 23, 24, 1, 2, 3]
    spans = index.find_spans(answer, min_tokens=4)
    assert [(s.start, s.end, s.records) for s in spans] == [(1, 9, [1]), (10, 15, [2])]
    # 24 then 1, 2, 3: two records meet there, but a span never runs across their boundary
    assert index.find_spans([22, 23, 24, 1, 2, 3], min_tokens=4) == []
    assert index.find_spans([40, 41, 42, 43], min_tokens=2) == []


def test_a_span_in_many_records_counts_them(tmp_path):
    build([[7, 8, 9, 1], [3, 7, 8, 9], [7, 8, 9, 2]], tmp_path)
    (span,) = SpanIndex(tmp_path).find_spans([0, 7, 8, 9], min_tokens=3, max_records=2)
    assert (span.start, span.end, span.occurrences, span.records) == (1, 4, 3, [0, 1])


def test_large_token_ids_and_an_empty_index(tmp_path):
    build([[150_000, 150_001, 150_002]], tmp_path / "big")
    assert SpanIndex(tmp_path / "big").find_spans([150_000, 150_001, 150_002], 3)[0].records == [0]
    build([], tmp_path / "empty")
    assert SpanIndex(tmp_path / "empty").find_spans([1, 2, 3], 1) == []
