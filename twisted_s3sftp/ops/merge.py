"""
The metrics of several worker processes (C{--workers N}) as those of one
server.

Each worker serves its own C{/metrics} to the parent; the parent's
C{/metrics} is their sum, sample by sample (same name, same labels), so
that dashboards and alerts read the same names and labels whatever the
number of workers:

  - counters and histograms (buckets, counts, sums) add up to what one
    server would have counted;
  - gauges add up too: C{s3sftp_sessions} is every worker's sessions, and
    C{s3sftp_buffer_limit_bytes} is every worker's C{--memory-limit},
    which is what the machine may hold;
  - C{*_created} samples (when a counter was created) are dropped: a sum
    of times means nothing.

A worker that dies takes its counters with it; the restarted one counts
from zero.  So that the sums never go down (which Prometheus would read as
a counter reset, and turn into a spike in C{rate()}), the counters and
histograms of a worker's last scrape are kept as I{retired} and added to
every later sum (L{Gathered.retire}).  What the worker counted after its
last scrape is lost; a scrape interval's worth, at most.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from attrs import define, field
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

#: The families whose samples only grow (kept when a worker retires).
_MONOTONIC = frozenset({"counter", "histogram", "summary"})

_Key = tuple[str, tuple[tuple[str, str], ...]]


def _key(name: str, labels: dict[str, str]) -> _Key:
    return name, tuple(sorted(labels.items()))


@define
class _Family:
    """
    One metric family being summed.
    """

    name: str
    documentation: str
    kind: str
    samples: dict[_Key, float] = field(factory=dict)

    def add(self, key: _Key, value: float) -> None:
        self.samples[key] = self.samples.get(key, 0.0) + value


@define(eq=False)
class Gathered:
    """
    The sums of the workers' metrics.

    @ivar retired: the monotonic samples of workers that are gone, by
        family name, kept in every later sum.
    """

    retired: dict[str, _Family] = field(factory=dict)

    def retire(self, exposition: str) -> None:
        """
        A worker is gone: keep the counters and histograms of its last
        scrape.

        @param exposition: that scrape, in Prometheus' text format.
        """
        try:
            parsed = list(_parse(exposition))
        except ValueError:
            return
        for family in parsed:
            if family.kind not in _MONOTONIC:
                continue
            kept = self.retired.setdefault(
                family.name, _Family(family.name, family.documentation, family.kind)
            )
            for key, value in family.samples.items():
                kept.add(key, value)

    def merge(self, expositions: Iterable[str]) -> list[Metric]:
        """
        @param expositions: each running worker's metrics, in Prometheus'
            text format.
        @return: their sums, with the retired workers' counters, as
            metric families (for a collector to yield).
        """
        families: dict[str, _Family] = {}
        for name, kept in self.retired.items():
            families[name] = _Family(name, kept.documentation, kept.kind, dict(kept.samples))
        for exposition in expositions:
            try:
                parsed = list(_parse(exposition))
            except ValueError:
                # One worker's page that does not parse leaves it out,
                # not the others.
                continue
            for family in parsed:
                into = families.setdefault(
                    family.name, _Family(family.name, family.documentation, family.kind)
                )
                for key, value in family.samples.items():
                    into.add(key, value)
        return [_metric(family) for family in families.values()]


def _parse(exposition: str) -> Iterator[_Family]:
    for metric in text_string_to_metric_families(exposition):
        family = _Family(metric.name, metric.documentation, metric.type)
        for sample in metric.samples:
            if sample.name.endswith("_created"):
                continue
            family.add(_key(sample.name, sample.labels), sample.value)
        yield family


def _metric(family: _Family) -> Metric:
    metric = Metric(family.name, family.documentation, family.kind)
    # In the order first seen: a histogram's buckets stay in order.
    for (name, labels), value in family.samples.items():
        metric.add_sample(name, dict(labels), value)
    return metric
