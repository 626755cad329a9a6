from cloud.ingest_stats import LATENCY_BOUNDS_MS, histogram, percentile


def test_histogram_and_interpolated_percentiles() -> None:
    buckets = histogram([1, 2, 3, 4, 7, 8, 30, 40, 45, 400])
    assert sum(buckets) == 10 and len(buckets) == len(LATENCY_BOUNDS_MS)
    assert buckets[0] == 4 and buckets[1] == 2 and buckets[3] == 3 and buckets[6] == 1
    assert 0 < percentile(buckets, 0.3) <= 5
    assert 25 < percentile(buckets, 0.8) <= 50
    assert 250 < percentile(buckets, 0.95) <= 500
    assert percentile([0] * len(LATENCY_BOUNDS_MS), 0.5) is None
