"""Prometheus exporter: a custom collector that builds fresh metric families at every scrape.

Only the queues this worker owns right now are exported, so when a partition moves to another
worker its queues disappear here and appear there. HELP texts state each definition.

Containment (issue 13): each queue's samples of each group of series (a "part": live, totals,
windows, config, staffing, forecast, pipeline) are staged and added only if the whole group was
computed for that queue. A failure leaves that queue's series of that part out of the scrape (not
0), counts in callcenter_export_errors_total{part} and is logged once per queue and part; the other
queues and parts are exported as usual. Parts the model already left out (None in its read(), see
kpi/model.py) are skipped without counting again.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from .. import events as ev
from ..kpi.formulas import FORMULA_TEXT
from ..kpi.model import (
    CALLBACK_RESULTS,
    EXPORT_ERRORS,
    EXPORT_PARTS,
    FLOW_OUT_REASONS,
    OUTBOUND_RESULTS,
    SURVEY_LINK_SECONDS,
    ExportErrors,
    Histogram,
    threshold_key,
)
from ..kpi.quality import CSAT_SCORES, NPS_SCORES
from ..kpi.windows import WINDOW_NAMES

NS = "callcenter"
LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
WINDOW_RULE = (
    "Window by event time at one-second resolution (5m = current second and the 299 before; today = "
    "since the queue's business-day start in its time zone). Offered counts at queue entry; answered, "
    "abandoned and flowed-out count when the wait ended; handled when the conversation ended."
)
WAIT_RULE = "Wait = time of the ending event minus time of call.offered, by event time."


class PipelineHealth:
    """Per-worker counters of the pipeline itself (they restart at zero with the process)."""

    def __init__(self, event_types: Iterable[str]):
        self.events = {t: 0 for t in sorted(event_types)}
        self.rejected = {r: 0 for r in ev.REJECT_REASONS}
        self.applied = 0
        self.duplicates = 0
        self.late = 0
        self.lag = Histogram(LAG_BUCKETS)
        self.partitions_held = 0  # input partitions the first stage has paused (align.py)
        self.unrouted = {t: 0 for t in sorted(event_types)}  # valid events that name no queue
        self.agent_too_late = 0  # agent shards' copies too late to apply (not dead-lettered)

    def count_valid(self, valid: Iterable[ev.Valid]) -> None:
        for e in valid:
            self.events[e.type] = self.events.get(e.type, 0) + 1
            if not e.routed_to_a_queue:
                self.unrouted[e.type] = self.unrouted.get(e.type, 0) + 1

    def count_rejected(self, rejected: Iterable[ev.Rejected]) -> None:
        for r in rejected:
            self.rejected[r.reason] = self.rejected.get(r.reason, 0) + 1

    def count_batch(self, result) -> None:
        self.applied += len(result.accepted)
        self.duplicates += result.outcomes.get("duplicate", 0)
        self.late += result.outcomes.get("late", 0)
        if ev.is_agent_key(result.queue):
            self.agent_too_late += result.outcomes.get("too_late", 0)
        for lag in result.lags:
            self.lag.observe(max(0.0, lag))
        self.count_rejected(result.rejected)


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{NS}_{name}", doc, labels=labels)


def _counter(name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
    # prometheus_client appends _total to counter families itself.
    return CounterMetricFamily(f"{NS}_{name}", doc, labels=labels)


def _histogram_args(hist: Histogram) -> tuple:
    buckets = [("+Inf" if math.isinf(b) else format(b, "g"), float(n)) for b, n in hist.cumulative()]
    return buckets, float(hist.sum)


def _histogram(family: HistogramMetricFamily, labels: list[str], hist: Histogram) -> None:
    family.add_metric(labels, *_histogram_args(hist))


ERRORS_HELP = (
    "Failures contained while computing one queue's numbers for export (/metrics and /api/queues), by part: "
    "windows (rolling-window counts, service levels, rates), staffing (Erlang C/A), forecast (comparison with "
    "the forecast file), live, totals, config, pipeline (groups of series of the scrape), read (the whole read "
    "of the worker's queues). The failing queue's series of that part are left out of that scrape or read, "
    "not shown as 0; other queues and parts are unaffected. The worker logs the first failure of each queue "
    "and part with its traceback."
)


class _Stage:
    """One queue's samples of one part, added to their families only once all were computed."""

    def __init__(self) -> None:
        self.samples: list[tuple] = []

    def __call__(self, family, labels: list[str], value: float) -> None:
        self.samples.append((family, labels, (float(value),)))  # float(): a bad value fails here, contained

    def histogram(self, family: HistogramMetricFamily, labels: list[str], hist: Histogram) -> None:
        self.samples.append((family, labels, _histogram_args(hist)))

    def commit(self) -> None:
        for family, labels, args in self.samples:
            family.add_metric(labels, *args)


class QueueCollector(Collector):
    def __init__(self, states, health: PipelineHealth, errors: ExportErrors | None = None):
        self.states = states
        self.health = health
        self.errors = errors if errors is not None else EXPORT_ERRORS

    def collect(self):
        views = self.errors.run("(all queues)", "read", self.states.read_all, default=None)
        views = views[1] if views is not None else {}  # a failed read leaves every queue out, not the scrape
        yield from self._live(views)
        yield from self._totals(views)
        yield from self._windows(views)
        yield from self._config(views)
        yield from self._quality(views)
        yield from self._staffing(views)
        yield from self._forecast(views)
        yield from self._pipeline(views)
        yield from self.errors.run("(all agents)", "agents", lambda: list(self._agents()), default=[])
        errors = _counter("export_errors", ERRORS_HELP, ["part"])
        for part in dict.fromkeys(EXPORT_PARTS + tuple(self.errors.counts)):
            errors.add_metric([part], self.errors.counts.get(part, 0))
        yield errors

    def _each(self, part: str, views: dict, fill) -> None:
        """fill(queue, view, add) for every queue, contained: its samples are added only if it finished."""

        def staged(queue: str, view: dict) -> bool:
            add = _Stage()
            fill(queue, view, add)
            add.commit()
            return True

        for queue, v in views.items():
            self.errors.run(queue, part, staged, queue, v, default=False)

    def _live(self, views: dict):
        waiting = _gauge("calls_waiting", "Calls in the queue now (offered, wait not ended), excluding orphaned calls.", ["queue"])
        oldest = _gauge("oldest_call_wait_seconds", "Wait so far of the longest-waiting call in the queue now (0 when none waits). " + WAIT_RULE + " The running wait uses the worker's stream clock.", ["queue"])
        over = _gauge("calls_waiting_over_threshold", "Calls waiting now whose wait already exceeds the threshold: service-level misses in the making.", ["queue", "threshold"])
        agents = _gauge("agents", "Agents serving the queue (a member of it) by state: available, on_call, wrap_up, not_ready (includes logged in but not yet ready). An agent in several queues counts in each.", ["queue", "state"])
        not_ready = _gauge("agents_not_ready", "Agents serving the queue in state not_ready now, by the reason code of their latest state change (login: logged in, not yet ready; joined: just added to the queue; unknown: no reason given).", ["queue", "reason"])
        over_limit = _gauge("agents_not_ready_over_limit", "Agents serving the queue in state not_ready for longer than the limit (seconds, the queue's not_ready_limits_seconds), by the stream clock, whatever the reason.", ["queue", "limit"])
        orphaned = _gauge("calls_orphaned", "Calls whose wait exceeds the queue's orphan_after_seconds: their ending event was probably lost. Not counted in calls_waiting.", ["queue"])

        def fill(queue: str, v: dict, add: _Stage) -> None:
            live = v["live"]
            add(waiting, [queue], live["calls_waiting"])
            add(oldest, [queue], live["oldest_call_wait_seconds"])
            for t, n in live["calls_waiting_over_threshold"].items():
                add(over, [queue, t], n)
            for state, n in live["agents"].items():
                add(agents, [queue, state], n)
            for reason, n in live["agents_not_ready_by_reason"].items():
                add(not_ready, [queue, reason], n)
            for limit, n in live["agents_not_ready_over_limit"].items():
                add(over_limit, [queue, limit], n)
            add(orphaned, [queue], live["calls_orphaned"])

        self._each("live", views, fill)
        yield from (waiting, oldest, over, agents, not_ready, over_limit, orphaned)

    def _totals(self, views: dict):
        simple = {
            "offered": _counter("calls_offered", "Calls that entered the queue (call.offered), counted at entry.", ["queue"]),
            "answered": _counter("calls_answered", "Calls answered by an agent (call.answered), counted when answered.", ["queue"]),
            "abandoned": _counter("calls_abandoned", "Calls whose caller hung up while waiting (call.abandoned), counted when abandoned.", ["queue"]),
            "short_abandoned": _counter("calls_short_abandoned", "Abandoned calls whose wait was at most the queue's short-abandon time (default 5 s).", ["queue"]),
            "handled": _counter("calls_handled", "Answered calls whose conversation ended (call.ended or call.transferred).", ["queue"]),
        }
        flowed = _counter("calls_flowed_out", "Calls that left the queue other than answered or abandoned (call.flowed_out), by reason.", ["queue", "reason"])
        answered_within = _counter("calls_answered_within_threshold", "Answered calls whose wait was at most the threshold (wait <= T). " + WAIT_RULE, ["queue", "threshold"])
        abandoned_within = _counter("calls_abandoned_within_threshold", "Abandoned calls whose wait was at most the threshold (wait <= T). " + WAIT_RULE, ["queue", "threshold"])
        handle = _counter("handle_seconds", "Seconds of handled calls by phase: talk (answer to end, minus hold), hold (hold_started to hold_ended), wrapup (call end to wrapup_ended, counted when wrap-up ends).", ["queue", "phase"])
        answer_hist = HistogramMetricFamily(f"{NS}_answer_wait_seconds", "Wait of answered calls (speed of answer). Bucket bounds include every service-level threshold, so le=T gives A<=T exactly. " + WAIT_RULE, labels=["queue"])
        abandon_hist = HistogramMetricFamily(f"{NS}_abandon_wait_seconds", "Wait of abandoned calls before the caller hung up. Bucket bounds include every threshold and the short-abandon time. " + WAIT_RULE, labels=["queue"])

        def fill(queue: str, v: dict, add: _Stage) -> None:
            totals = v["totals"]
            for name, family in simple.items():
                add(family, [queue], totals[name])
            for reason in FLOW_OUT_REASONS:
                add(flowed, [queue, reason], totals[f"flowed_out:{reason}"])
            for t in v["thresholds"]:
                key = threshold_key(t)
                add(answered_within, [queue, key], totals[f"answered_within:{key}"])
                add(abandoned_within, [queue, key], totals[f"abandoned_within:{key}"])
            for phase in ("talk", "hold", "wrapup"):
                add(handle, [queue, phase], totals[f"{phase}_seconds"])
            add.histogram(answer_hist, [queue], v["answer_wait_histogram"])
            add.histogram(abandon_hist, [queue], v["abandon_wait_histogram"])

        self._each("totals", views, fill)
        yield from simple.values()
        yield from (flowed, answered_within, abandoned_within, handle, answer_hist, abandon_hist)

    def _windows(self, views: dict):
        calls = _gauge("window_calls", "Calls in a rolling window by outcome (offered, answered, abandoned, short_abandoned, flowed_out, handled). " + WINDOW_RULE, ["queue", "window", "outcome"])
        within = _gauge("window_calls_within_threshold", "Answered or abandoned calls in the window whose wait was at most the threshold; with window_calls any of the seven service-level formulas can be computed. " + WINDOW_RULE, ["queue", "window", "threshold", "outcome"])
        sl = _gauge("service_level_ratio", "Service level in the window by the queue's formula (see callcenter_queue_info{formula}): " + "; ".join(f"{k} = {v}" for k, v in FORMULA_TEXT.items()) + ". Absent when the denominator is 0. " + WINDOW_RULE, ["queue", "window", "threshold"])
        derived = {
            "answer_rate": _gauge("answer_rate_ratio", "answered / offered in the window (offered counted at entry, answered at answer, so a short window can briefly exceed 1). " + WINDOW_RULE, ["queue", "window"]),
            "abandon_rate": _gauge("abandon_rate_ratio", "abandoned / offered in the window (offered counted at entry, abandoned when the caller hung up). " + WINDOW_RULE, ["queue", "window"]),
            "average_answer_wait_seconds": _gauge("average_answer_wait_seconds", "Average speed of answer: sum of waits of answered calls / answered calls, in the window. " + WINDOW_RULE, ["queue", "window"]),
            "average_abandon_wait_seconds": _gauge("average_abandon_wait_seconds", "Sum of waits of abandoned calls / abandoned calls, in the window. " + WINDOW_RULE, ["queue", "window"]),
            "average_handle_seconds": _gauge("average_handle_seconds", "Average handle time: (talk + hold + wrap-up seconds) / handled calls, in the window. " + WINDOW_RULE, ["queue", "window"]),
            "occupancy": _gauge("occupancy_ratio", "Occupancy of the queue's agents: seconds on_call or wrap_up / seconds available, on_call or wrap_up, in the window (not_ready excluded).", ["queue", "window"]),
        }

        def fill(queue: str, v: dict, add: _Stage) -> None:
            if v["windows"] is None:  # the model could not compute them (counted there)
                return
            for window in WINDOW_NAMES:
                w = v["windows"][window]
                for outcome in ("offered", "answered", "abandoned", "short_abandoned", "flowed_out", "handled"):
                    add(calls, [queue, window, outcome], w[outcome])
                for t, n in w["answered_within"].items():
                    add(within, [queue, window, t, "answered"], n)
                for t, n in w["abandoned_within"].items():
                    add(within, [queue, window, t, "abandoned"], n)
                for t, value in w["service_level"].items():
                    if value is not None:
                        add(sl, [queue, window, t], value)
                for name, family in derived.items():
                    if w[name] is not None:
                        add(family, [queue, window], w[name])

        self._each("windows", views, fill)
        yield from (calls, within, sl)
        yield from derived.values()

    def _config(self, views: dict):
        target = _gauge("service_level_target_ratio", "Configured service-level target per threshold (from the queue's config).", ["queue", "threshold"])
        info = _gauge("queue_info", "Always 1; labels carry the queue's display label, service-level formula, IANA time zone and the team its alerts go to, from the config.", ["queue", "label", "formula", "timezone", "team"])
        short = _gauge("short_abandon_threshold_seconds", "Configured short-abandon time: abandons with a wait at most this long are short abandons.", ["queue"])
        is_open = _gauge("queue_open", "1 while the queue is inside its business hours (open_hours and closed_dates, in the queue's time zone, read at the stream clock), else 0. Per-queue alerts are suppressed while it is 0.", ["queue"])
        opened = _gauge("queue_opened_timestamp_seconds", "Unix time at which the queue's current open period began (touching business-hours spans merged, at most 7 days back); absent while the queue is closed. The feed-stall alert counts silence from here or from the newest event, whichever is later.", ["queue"])
        min_calls = _gauge("alert_min_calls", "Configured alert_min_calls: calls a window's denominator needs before its service level or rates may raise an alert (0: no minimum).", ["queue"])
        limits = {  # config key in view["alert_limits"] -> gauge; a limit of 0 turns the alert off: no sample
            "calls_waiting": _gauge("calls_waiting_limit", "Configured alert_calls_waiting: CallCenterCallsWaitingHigh fires while calls_waiting stays above it. Absent when the alert is off (0).", ["queue"]),
            "oldest_wait_seconds": _gauge("oldest_call_wait_limit_seconds", "Configured alert_oldest_wait_seconds: CallCenterOldestWaitHigh fires while oldest_call_wait_seconds stays above it. Absent when off (0).", ["queue"]),
            "abandon_rate": _gauge("abandon_rate_limit_ratio", "Configured alert_abandon_rate: CallCenterAbandonRateHigh fires while abandoned / offered in the 15m window stays above it. Absent when off (0).", ["queue"]),
            "short_abandon_rate": _gauge("short_abandon_rate_limit_ratio", "Configured alert_short_abandon_rate: CallCenterShortAbandonSpike fires when short abandons / offered in the 15m window exceed it. Absent when off (0).", ["queue"]),
            "event_stall_seconds": _gauge("event_stall_limit_seconds", "Configured alert_event_stall_seconds: CallCenterEventFeedStalled fires when no event reached the queue for longer than this while it is open (counted from the newest event or the opening time, whichever is later). Absent when off (0).", ["queue"]),
            "understaffed_agents": _gauge("understaffed_limit_agents", "Configured alert_understaffed_agents: CallCenterUnderstaffed fires when agents_short stays at or above it for understaffed_limit_seconds while open. Absent when off (0).", ["queue"]),
        }
        understaffed_for = _gauge("understaffed_limit_seconds", "Configured alert_understaffed_seconds: how long agents_short must stay at or above understaffed_limit_agents before CallCenterUnderstaffed fires. Absent when that alert is off.", ["queue"])

        def fill(queue: str, v: dict, add: _Stage) -> None:
            for t, value in v["targets"].items():
                add(target, [queue, t], value)
            add(info, [queue, v["label"], v["formula"], v["timezone"], v["team"]], 1)
            add(short, [queue], v["short_abandon_seconds"])
            add(is_open, [queue], 0.0 if v["opened_at"] is None else 1.0)
            if v["opened_at"] is not None:
                add(opened, [queue], v["opened_at"])
            add(min_calls, [queue], v["alert_limits"]["min_calls"])
            for key, family in limits.items():
                if v["alert_limits"][key] > 0:
                    add(family, [queue], v["alert_limits"][key])
            if v["alert_limits"]["understaffed_agents"] > 0:
                add(understaffed_for, [queue], v["alert_limits"]["understaffed_seconds"])

        self._each("config", views, fill)
        yield from (target, info, short, is_open, opened, min_calls)
        yield from limits.values()
        yield understaffed_for

    def _agents(self):
        """Per-agent series, only where [stream] export_agent_metrics asks for them, for at most
        agent_metrics_limit agents (the first by id): agent ids are unbounded label values."""
        config = getattr(self.states, "config", None)
        if config is None or not config.stream.export_agent_metrics:
            return
        _, agents = self.states.read_agents()
        agents.sort(key=lambda a: a["agent_id"])
        limit = config.stream.agent_metrics_limit
        state = _gauge("agent_state_seconds", "Seconds the agent has been in its current state (label state: available, on_call, wrap_up, not_ready; logged-out agents have no sample), by the stream clock. Per-agent series: only with export_agent_metrics.", ["agent", "state"])
        handled = _gauge("agent_calls_handled_today", "Calls the agent handled today (its business day: that of its first queue). Per-agent series: only with export_agent_metrics.", ["agent"])
        occupancy = _gauge("agent_occupancy_today_ratio", "The agent's occupancy today: (talk + hold + wrap-up seconds) / (logged-in - not_ready seconds). Per-agent series: only with export_agent_metrics.", ["agent"])
        left_out = _gauge("agent_metrics_left_out", "Agents of this worker without per-agent series because of agent_metrics_limit.", [])
        for a in agents[:limit]:
            if a["state_seconds"] is not None:
                state.add_metric([a["agent_id"], a["state"]], a["state_seconds"])
            handled.add_metric([a["agent_id"]], a["today"]["handled"])
            if a["today"]["occupancy"] is not None:
                occupancy.add_metric([a["agent_id"]], a["today"]["occupancy"])
        left_out.add_metric([], max(0, len(agents) - limit))
        yield from (state, handled, occupancy, left_out)

    def _quality(self, views: dict):
        """Surveys (CSAT, NPS, FCR), outbound dialling and callbacks, per queue (kpi/quality.py)."""
        surveys = _counter("surveys", "Post-call surveys (call.survey) applied to the queue they name, counted at the survey's own time (it may come hours after the call, after the call's interval closed).", ["queue"])
        csat = _counter("survey_csat_answers", "Survey answers to the CSAT question (1-5) by score.", ["queue", "score"])
        nps = _counter("survey_nps_answers", "Survey answers to the NPS question (0-10) by score.", ["queue", "score"])
        resolved = _counter("survey_resolved_answers", "Survey answers to the first-call-resolution question: resolved true or false.", ["queue", "resolved"])
        unlinked = _counter("surveys_unlinked", f"Surveys whose call was not handled in the queue in the {SURVEY_LINK_SECONDS / 3600:g} h before the survey (an unknown call, or a survey named for another queue); also counted in surveys_total.", ["queue"])
        attempts = _counter("outbound_attempts", "Outbound dial attempts (call.outbound_attempt) by result.", ["queue", "result"])
        live = _counter("outbound_live_connects", "Outbound attempts answered by a person: results listed in the queue's outbound_connected_results (default connected).", ["queue"])
        agent = _counter("outbound_agent_connects", "Live outbound connects that reached an agent within outbound_abandon_seconds (default 2 s): the attempt names its agent_id, or a call.answered of the call follows within the limit. Live connects minus these are abandoned outbound calls (US FTC/TCPA, UK Ofcom).", ["queue"])
        requested = _counter("callbacks_requested", "Callbacks requested (call.callback_requested), once per callback_id (or call_id).", ["queue"])
        completed = _counter("callbacks_completed", "Callback completions (call.callback_completed) by result. connected and cancelled close the request; no_answer and failed leave it open for a retry.", ["queue", "result"])
        unmatched = _counter("callbacks_unmatched", "Callback completions with no open request known in the queue (also counted in callbacks_completed_total).", ["queue"])
        cb_wait = _counter("callback_wait_seconds", "Seconds from request to a connected completion, summed over the connected callbacks whose request is known.", ["queue"])
        logged_in = _counter("agent_logged_in_seconds", "Agent-seconds logged in to the queue, in any state (not_ready included); an agent serving several queues counts in each.", ["queue"])
        window_rule = " " + WINDOW_RULE.split(". ")[0] + ". Absent when the denominator is 0."
        ratios = {  # view path in a window -> gauge
            ("quality", "csat_ratio"): _gauge("csat_ratio", "Customer satisfaction, top-two-box: CSAT answers 4 or 5 / CSAT answers (1-5 scale), surveys counted at their own time." + window_rule, ["queue", "window"]),
            ("quality", "csat_average_score"): _gauge("csat_average_score", "Mean CSAT answer on the 1-5 scale." + window_rule, ["queue", "window"]),
            ("quality", "net_promoter_score"): _gauge("net_promoter_score", "NPS = 100 x (promoters, answers 9-10, minus detractors, answers 0-6) / NPS answers; -100 to 100." + window_rule, ["queue", "window"]),
            ("outbound", "connect_rate"): _gauge("outbound_connect_rate_ratio", "Outbound connect rate: live connects / dial attempts." + window_rule, ["queue", "window"]),
            ("outbound", "abandon_rate"): _gauge("outbound_abandon_rate_ratio", "Abandoned outbound calls / live connects, abandoned = answered by a person but no agent within outbound_abandon_seconds (2 s). The regulators' 30-day figure per campaign is outbound_abandon_30d_ratio." + window_rule, ["queue", "window"]),
            ("callbacks", "completion_rate"): _gauge("callback_completion_rate_ratio", "Callbacks completed connected / callbacks requested, each counted at its own time (so a short window can exceed 1)." + window_rule, ["queue", "window"]),
            ("callbacks", "average_wait_seconds"): _gauge("average_callback_wait_seconds", "Mean seconds from request to a connected callback." + window_rule, ["queue", "window"]),
        }
        fcr = _gauge("first_call_resolution_ratio", "First-call resolution by method. survey: answers resolved=true / answers to the resolved question. repeat_caller: handled calls whose caller (by keyed hash) called the queue, or another queue of its repeat_caller_group, again within repeat_caller_seconds (default 24 h), subtracted from the handled calls whose period passed, over those; final only once the period has passed, so a call counts here repeat_caller_seconds after it ended, in the window of that moment." + window_rule, ["queue", "window", "method"])
        checked = _counter("repeat_caller_checked_calls", "Handled calls with a known caller whose repeat_caller_seconds passed (counted then): the denominator of the repeat-caller FCR. Needs stream.caller_hash_key; caller numbers are kept only as keyed hashes.", ["queue"])
        repeated = _counter("repeat_caller_repeated_calls", "Of callcenter_repeat_caller_checked_calls_total, those whose caller called the queue (or another queue of its repeat_caller_group) again within repeat_caller_seconds after the call ended (not first-call resolved); counted when the period passed.", ["queue"])
        untracked = _counter("repeat_caller_untracked_calls", "Handled calls with a known caller left out of the repeat-caller FCR because the queue already tracked 20,000 calls in their period (a bound on the snapshot): shorten repeat_caller_seconds when this grows.", ["queue"])
        cost = _gauge("cost_per_handled_call", "Cost per handled call: logged-in agent-hours (any state) x the queue's cost_per_agent_hour / handled calls, in the queue's currency; windows today only (the rolling windows keep no logged-in seconds; interval reports have it too). Absent when cost_per_agent_hour is 0 or no call was handled.", ["queue", "window", "currency"])
        cb_open = _gauge("callbacks_open", "Callbacks requested and not yet completed (connected or cancelled); forgotten after 7 days.", ["queue"])
        cb_over = _gauge("callbacks_open_over_limit", "Open callbacks requested longer ago than callback_open_limit_seconds (stream clock). Absent when that limit is 0.", ["queue"])
        rule_ratio = _gauge("outbound_abandon_30d_ratio", "Abandoned outbound calls / live connects of a campaign over the last 30 business dates of the queue, today included (the US Telemarketing Sales Rule's 3 % per campaign per 30 days); campaign \"\" for attempts without one; at most 20 campaigns per queue, the rest as \"other\".", ["queue", "campaign"])
        rule_live = _gauge("outbound_live_connects_30d", "Live outbound connects of a campaign over the last 30 business dates of the queue: the denominator of outbound_abandon_30d_ratio.", ["queue", "campaign"])
        rule_limit = _gauge("outbound_abandon_limit_ratio", "Configured outbound_abandon_limit: CallCenterOutboundAbandonOverLimit fires when a campaign's outbound_abandon_30d_ratio exceeds it. Absent when off (0).", ["queue"])
        cb_limit = _gauge("callback_open_limit_seconds", "Configured callback_open_limit_seconds: a callback open longer is overdue (callbacks_open_over_limit). Absent when off (0).", ["queue"])
        cost_rate = _gauge("cost_per_agent_hour", "Configured cost of one logged-in agent-hour, in the currency of the label. Absent when 0.", ["queue", "currency"])

        def fill(queue: str, v: dict, add: _Stage) -> None:
            totals = v["totals"]
            add(surveys, [queue], totals["surveys"])
            add(unlinked, [queue], totals["surveys_unlinked"])
            for score in CSAT_SCORES:
                add(csat, [queue, str(score)], totals[f"csat:{score}"])
            for score in NPS_SCORES:
                add(nps, [queue, str(score)], totals[f"nps:{score}"])
            add(resolved, [queue, "true"], totals["fcr:resolved"])
            add(resolved, [queue, "false"], totals["fcr:unresolved"])
            add(checked, [queue], totals["repeat_caller_checked"])
            add(repeated, [queue], totals["repeat_caller_repeated"])
            add(untracked, [queue], totals["repeat_caller_untracked"])
            for result in OUTBOUND_RESULTS:
                add(attempts, [queue, result], totals[f"outbound:{result}"])
            add(live, [queue], totals["outbound_live_connects"])
            add(agent, [queue], totals["outbound_agent_connects"])
            add(requested, [queue], totals["callbacks_requested"])
            for result in CALLBACK_RESULTS:
                add(completed, [queue, result], totals[f"callbacks_completed:{result}"])
            add(unmatched, [queue], totals["callbacks_unmatched"])
            add(cb_wait, [queue], totals["callback_wait_seconds"])
            add(logged_in, [queue], totals["agent_logged_in_seconds"])
            for window, w in (v["windows"] or {}).items():
                for (part, key), family in ratios.items():
                    if w[part][key] is not None:
                        add(family, [queue, window], w[part][key])
                if w["quality"]["first_call_resolution_ratio"] is not None:
                    add(fcr, [queue, window, "survey"], w["quality"]["first_call_resolution_ratio"])
                if w["quality"]["repeat_caller_fcr_ratio"] is not None:
                    add(fcr, [queue, window, "repeat_caller"], w["quality"]["repeat_caller_fcr_ratio"])
                if w["cost_per_handled_call"] is not None:
                    add(cost, [queue, window, v["currency"]], w["cost_per_handled_call"])
            add(cb_open, [queue], v["live"]["callbacks_open"])
            if v["live"]["callbacks_open_over_limit"] is not None:
                add(cb_over, [queue], v["live"]["callbacks_open_over_limit"])
            for campaign, c in v["outbound_30_days"].items():
                add(rule_live, [queue, campaign], c["live_connects"])
                if c["abandon_rate"] is not None:
                    add(rule_ratio, [queue, campaign], c["abandon_rate"])
            limits = v["alert_limits"]
            if limits["outbound_abandon_rate"] > 0:
                add(rule_limit, [queue], limits["outbound_abandon_rate"])
            if limits["callback_open_seconds"] > 0:
                add(cb_limit, [queue], limits["callback_open_seconds"])
            if v["cost_per_agent_hour"] > 0:
                add(cost_rate, [queue, v["currency"]], v["cost_per_agent_hour"])

        self._each("quality", views, fill)
        yield from (surveys, csat, nps, resolved, unlinked, attempts, live, agent, requested, completed, unmatched,
                    cb_wait, logged_in, checked, repeated, untracked)
        yield from ratios.values()
        yield from (fcr, cost, cb_open, cb_over, rule_ratio, rule_live, rule_limit, cb_limit, cost_rate)

    def _staffing(self, views: dict):
        """Staffing from the live windows (kpi/staffing.py, kpi/erlang.py); absent while inputs are unknown."""
        inputs = {
            "arrivals_per_second": _gauge("staffing_arrivals_per_second", "Arrival rate the staffing models use: calls offered in the 15m window / 900 s. Absent below 5 calls.", ["queue"]),
            "handle_seconds": _gauge("staffing_handle_seconds", "Average handle time the staffing models use: (talk + hold + wrap-up seconds) / handled calls in the 1h window. Absent below 5 calls.", ["queue"]),
            "patience_seconds": _gauge("staffing_patience_seconds", "Mean caller patience Erlang A uses: seconds waited by answered and abandoned callers / abandoned calls in the 1h window. Absent below 5 abandons.", ["queue"]),
        }
        staffed = _gauge("agents_staffed", "Agents staffed now: available + on_call + wrap_up.", ["queue"])
        required = _gauge("agents_required", "Fewest agents whose projected service level (share of all callers answered within T) reaches the queue's target at T, at the live arrival rate and AHT: model erlang_c (M/M/c, nobody hangs up) or erlang_a (M/M/c+M, with the live patience).", ["queue", "model", "threshold"])
        gap = _gauge("agents_required_gap", "agents_required minus agents_staffed: positive means understaffed by that many agents.", ["queue", "model", "threshold"])
        projected_sl = _gauge("projected_service_level_ratio", "Service level (share of all callers answered within T) the current staffing can be expected to give at the live inputs, by model.", ["queue", "model", "threshold"])
        projected_asa = _gauge("projected_answer_wait_seconds", "Average wait of answered callers the current staffing can be expected to give at the live inputs, by model.", ["queue", "model"])
        projected_abandon = _gauge("projected_abandon_rate_ratio", "Share of callers expected to hang up while waiting at the current staffing (erlang_a; 0 in erlang_c).", ["queue", "model"])
        short = _gauge("agents_short", "Agents the queue is short of now: the largest agents_required_gap over its thresholds, by model erlang_a when the patience is known, else erlang_c. Negative: a surplus of that many.", ["queue"])
        short_for = _gauge("understaffed_seconds", "How long agents_short has stayed at or above understaffed_limit_agents without a break while the queue is open (stream clock, seen at each read of the worker, i.e. every scrape; a closed spell or over 5 minutes without a read starts it again); 0 while it is below or closed. Absent when the alert is off or the staffing is unknown.", ["queue"])

        def fill(queue: str, v: dict, add: _Stage) -> None:
            s = v["staffing"]
            if s is None:  # the model could not compute it (counted there)
                return
            for name, family in inputs.items():
                if s["inputs"][name] is not None:
                    add(family, [queue], s["inputs"][name])
            add(staffed, [queue], s["staffed"])
            for model, m in s["models"].items():
                for t, n in m["required"].items():
                    add(required, [queue, model, t], n)
                    add(gap, [queue, model, t], m["gap"][t])
                for t, value in m["projected_service_level"].items():
                    add(projected_sl, [queue, model, t], value)
                if m["projected_answer_wait_seconds"] is not None:
                    add(projected_asa, [queue, model], m["projected_answer_wait_seconds"])
                    add(projected_abandon, [queue, model], m["projected_abandon_ratio"])
            if s["agents_short"] is not None:
                add(short, [queue], s["agents_short"])
            if s["understaffed_seconds"] is not None:
                add(short_for, [queue], s["understaffed_seconds"])

        self._each("staffing", views, fill)
        yield from inputs.values()
        yield from (staffed, required, gap, projected_sl, projected_asa, projected_abandon, short, short_for)

    def _forecast(self, views: dict):
        """Forecast vs actual (kpi/forecast.py); absent for a queue without a forecast for its business day."""
        period_rule = " period: interval = the forecast interval the stream clock is in, day = the queue's business day."
        forecast = _gauge("forecast_offered_calls", "Calls the forecast file expects to be offered in the whole period." + period_rule, ["queue", "period"])
        to_date = _gauge("forecast_offered_to_date_calls", "Forecast offered calls up to now: each interval's forecast times the share of it that has passed, counted from the business day's start or from the queue's first event if later." + period_rule, ["queue", "period"])
        actual = _gauge("actual_offered_calls", "Calls offered so far in the period (call.offered, counted at entry)." + period_rule, ["queue", "period"])
        versus = _gauge("offered_vs_forecast_ratio", "Calls offered / forecast to date, over the intervals the forecast has a row for: 1.1 = 10 % more calls than forecast so far. Absent below 10 forecast calls to date." + period_rule, ["queue", "period"])
        forecast_aht = _gauge("forecast_handle_seconds", "Forecast average handle time of the period (day: weighted by forecast calls)." + period_rule, ["queue", "period"])
        actual_aht = _gauge("actual_handle_seconds", "Average handle time so far in the period: (talk + hold + wrap-up seconds) / handled calls." + period_rule, ["queue", "period"])
        planned = _gauge("forecast_planned_agents", "Agents the forecast file plans for the current interval.", ["queue"])
        wape = _gauge("forecast_wape_ratio", "Forecast accuracy of offered calls over the forecast's ended intervals of the business day, as WAPE: sum |actual - forecast| / sum actual (0 = perfect). Intervals without a forecast row are not compared. Absent before an ended interval had calls.", ["queue"])
        reforecast = _gauge("reforecast_offered_calls", "Intraday reforecast of offered calls, scaled by the day's actual / forecast to date over the forecast's intervals: period rest_of_day = the rest of the day's forecast times that; day = the whole day's forecast times that (= actual so far + rest of day when the data covers the whole day). Absent below 10 forecast calls to date.", ["queue", "period"])

        def fill(queue: str, v: dict, add: _Stage) -> None:
            f = v.get("forecast")
            if f is None:
                return
            for period in ("interval", "day"):
                p = f[period]
                if p is None:
                    continue
                add(forecast, [queue, period], p["forecast_offered"])
                add(to_date, [queue, period], p["forecast_offered_to_date"])
                add(actual, [queue, period], p["actual_offered"])
                for family, key in ((versus, "offered_vs_forecast"), (forecast_aht, "forecast_handle_seconds"), (actual_aht, "actual_handle_seconds")):
                    if p[key] is not None:
                        add(family, [queue, period], p[key])
            if f["planned_agents"] is not None:
                add(planned, [queue], f["planned_agents"])
            if f["wape"] is not None:
                add(wape, [queue], f["wape"])
            if f["reforecast"] is not None:
                for period in ("rest_of_day", "day"):
                    add(reforecast, [queue, period], f["reforecast"][period])

        self._each("forecast", views, fill)
        yield from (forecast, to_date, actual, versus, forecast_aht, actual_aht, planned, wape, reforecast)
        source = self.states.forecast
        if source is not None:
            loaded = _gauge("forecast_loaded_timestamp_seconds", "Unix time the forecast in use was loaded from the file (at start, or after a change of the file); absent while none could be loaded.", [])
            if source.loaded_at is not None:
                loaded.add_metric([], source.loaded_at)
            errors = _counter("forecast_load_errors", "Loads of the forecast file (at start or after a change) that failed: in whole (the previous forecast, or none, stays in use) or for some queues (left out). The worker logs file, line and reason.", [])
            errors.add_metric([], source.load_errors)
            yield from (loaded, errors)

    def _pipeline(self, views: dict):
        h = self.health
        events = _counter("events", "Valid events received by this worker's first stage, by type (an agent event counts once however many queues it concerns).", ["type"])
        for kind, n in h.events.items():
            events.add_metric([kind], n)
        rejected = _counter("events_rejected", "Events sent to the dead-letter topic with the original bytes, by reason: malformed_json, not_an_object, unknown_type, schema_violation, future_time, too_late (older than the queue's newest event minus the lateness), unmatched_outcome (no call.offered within the lateness).", ["reason"])
        for reason, n in h.rejected.items():
            rejected.add_metric([reason], n)
        applied = _counter("events_applied", "Event copies applied by this worker's second stage: once per queue an event concerns, once more for the agent it names (kpi/agents.py), and a call.offered with a caller once more for each other queue of its repeat_caller_group (a contact for repeat-caller FCR).", [])
        applied.add_metric([], h.applied)
        duplicates = _counter("events_duplicate", "Event copies ignored because their event_id was already applied to the queue or agent (counted per queue the event concerns, and for its agent).", [])
        duplicates.add_metric([], h.duplicates)
        late = _counter("events_late", "Event copies applied although older than the queue's (or agent's) newest event (out of order, within the lateness).", [])
        late.add_metric([], h.late)
        unrouted = _counter("events_unrouted", "Valid events that name no queue, by type: counted in events_total but in no queue's numbers. Expected for call.ivr_entered and call.ivr_left (IVR numbers are not computed yet); a survey, outbound attempt, callback or disposition needs its `queue` to count.", ["type"])
        for kind, n in h.unrouted.items():
            unrouted.add_metric([kind], n)
        agent_late = _counter("agent_events_too_late", "Event copies for an agent (kpi/agents.py) older than the agent's newest event minus the lateness: not applied to the agent. Not dead-lettered: the queue's copy of the same event is, if too late for the queue too.", [])
        agent_late.add_metric([], h.agent_too_late)
        last = _gauge("last_event_timestamp_seconds", "Event time (Unix seconds) of the newest event applied to the queue.", ["queue"])

        def fill(queue: str, v: dict, add: _Stage) -> None:
            if v["last_event_time"] is not None:
                add(last, [queue], v["last_event_time"])

        self._each("pipeline", views, fill)
        lag = HistogramMetricFamily(f"{NS}_event_lag_seconds", "Processing delay: wall clock when the second stage applied an event minus the event's time.", labels=[])
        _histogram(lag, [], h.lag)
        held = _gauge("input_partitions_held", "Partitions of the events topic this worker's first stage has paused because their events are more than half the lateness ahead, in event time, of the slowest partition with unread records (see the README, 'Replays and backlogs').", [])
        held.add_metric([], h.partitions_held)
        yield from (events, rejected, applied, duplicates, late, unrouted, agent_late, last, lag, held)
