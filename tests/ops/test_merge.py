"""
Tests for L{twisted_s3sftp.ops.merge}: the workers' metrics summed as
one server's.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from twisted.trial.unittest import SynchronousTestCase

from twisted_s3sftp.ops.merge import Gathered


def exposition(uploads: int, sessions: int, latencies: list[float]) -> str:
    """
    @return: one worker's C{/metrics} page with those counts.
    """
    registry = CollectorRegistry()
    counter = Counter("s3sftp_uploads", "Uploads.", ["outcome"], registry=registry)
    counter.labels("stored").inc(uploads)
    Gauge("s3sftp_sessions", "Sessions.", registry=registry).set(sessions)
    histogram = Histogram("s3sftp_s3_request_seconds", "S3.", buckets=(0.1, 1), registry=registry)
    for latency in latencies:
        histogram.observe(latency)
    return generate_latest(registry).decode()


def samples(
    gathered: Gathered, pages: list[str]
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """
    @return: every merged sample by name and labels.
    """
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in gathered.merge(pages)
        for sample in family.samples
    }


class GatheredTests(SynchronousTestCase):
    """
    L{Gathered.merge} and L{Gathered.retire}.
    """

    def test_sum(self) -> None:
        """
        Counters, gauges and histogram buckets, counts and sums are added
        sample by sample; C{_created} samples are dropped; each family
        appears once.
        """
        merged = samples(Gathered(), [exposition(3, 2, [0.05, 0.5]), exposition(4, 5, [2.0])])
        self.assertEqual(merged[("s3sftp_uploads_total", (("outcome", "stored"),))], 7)
        self.assertEqual(merged[("s3sftp_sessions", ())], 7)
        bucket = "s3sftp_s3_request_seconds_bucket"
        self.assertEqual(merged[(bucket, (("le", "0.1"),))], 1)
        self.assertEqual(merged[(bucket, (("le", "1.0"),))], 2)
        self.assertEqual(merged[(bucket, (("le", "+Inf"),))], 3)
        self.assertEqual(merged[("s3sftp_s3_request_seconds_count", ())], 3)
        self.assertAlmostEqual(merged[("s3sftp_s3_request_seconds_sum", ())], 2.55)
        self.assertFalse([name for name, _ in merged if name.endswith("_created")])

    def test_renderedOnce(self) -> None:
        """
        The merged families render as one valid page: one C{TYPE} line per
        family, buckets in order.
        """
        registry = CollectorRegistry()

        class Fixed:
            def collect(self):  # type: ignore[no-untyped-def]
                return iter(Gathered().merge([exposition(1, 1, [0.5]), exposition(1, 1, [0.5])]))

        registry.register(Fixed())
        page = generate_latest(registry).decode()
        self.assertEqual(page.count("# TYPE s3sftp_uploads_total counter"), 1)
        self.assertIn('s3sftp_uploads_total{outcome="stored"} 2.0', page)
        self.assertLess(page.index('le="0.1"'), page.index('le="+Inf"'))

    def test_retired(self) -> None:
        """
        A worker that is gone leaves its counters and histograms in every
        later sum, so that they never go down; its gauges go with it.
        """
        gathered = Gathered()
        gathered.retire(exposition(5, 9, [0.05]))
        merged = samples(gathered, [exposition(1, 1, [])])
        self.assertEqual(merged[("s3sftp_uploads_total", (("outcome", "stored"),))], 6)
        self.assertEqual(merged[("s3sftp_sessions", ())], 1)
        self.assertEqual(merged[("s3sftp_s3_request_seconds_count", ())], 1)
        # Nothing running: the retired counters alone.
        merged = samples(gathered, [])
        self.assertEqual(merged[("s3sftp_uploads_total", (("outcome", "stored"),))], 5)
        self.assertNotIn(("s3sftp_sessions", ()), merged)


class BadPageTests(SynchronousTestCase):
    """
    A page that does not parse.
    """

    def test_leftOut(self) -> None:
        """
        One worker's page that does not parse is left out of the sum (and
        not retired), the others' still count.
        """
        gathered = Gathered()
        gathered.retire("this is { not metrics")
        merged = samples(gathered, ["this is { not metrics", exposition(2, 1, [])])
        self.assertEqual(merged[("s3sftp_uploads_total", (("outcome", "stored"),))], 2)
