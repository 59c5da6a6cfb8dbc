"""`/metrics` of the decisions stage, made at scrape time from the run loop's latest DecisionsView.

Label sets stay bounded: events by (rule, label, type), where labels are the model's classes a rule matches;
delivery by output and one of three results; the steady label as an info gauge holding each stream's
current label only (a label left behind is not exported any more, not kept at 0).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from stream.decisions.hub import DecisionsView

RESULTS = ("delivered", "failed", "dropped")


class DecisionsCollector:
    def __init__(self, view: Callable[[], DecisionsView]) -> None:
        self._view = view

    def collect(self) -> Iterator[Metric]:
        view = self._view()
        events = CounterMetricFamily("stream_events", "Rule events, by rule, label and type (start, end)",
                                     labels=["rule", "label", "type"])
        for rule, label, kind, n in view.counts:
            events.add_metric([rule, label, kind], n)
        delivery = CounterMetricFamily("stream_event_delivery", "Events an output delivered, gave up on after "
                                       "retries (failed), or never tried, its queue full (dropped)",
                                       labels=["output", "result"])
        pending = GaugeMetricFamily("stream_event_pending", "Events an output holds, not yet delivered",
                                    labels=["output"])
        for d in view.deliveries:
            for result in RESULTS:
                delivery.add_metric([d.output, result], getattr(d, result))
            pending.add_metric([d.output], d.pending)
        steady = GaugeMetricFamily("stream_steady_label_info", "1 for the stream's current steady label "
                                   "('uncertain' when none holds)", labels=["stream", "label"])
        prob = GaugeMetricFamily("stream_steady_label_probability", "The smoothed probability of the stream's "
                                 "steady label", labels=["stream"])
        for s in view.streams:
            if s.steady is not None:
                steady.add_metric([s.name, s.steady.label], 1.0)
                prob.add_metric([s.name], s.steady.prob)
        yield from (events, delivery, pending, steady, prob)
