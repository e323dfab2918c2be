"""The four callpulse dashboards, one function per panel.

Panels read the worker's windowed gauges (exact rolling windows by event time, picked with the
``window`` variable) and the recording rules of deploy/prometheus/rules/recording.rules.yml; only
per-interval counts, pipeline rates and histograms use ``rate``/``increase`` over
``$__rate_interval``. Metric names: README "Metric reference" and /tmp/cp/contract.md.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as cb, dashboard as db, stat
from grafana_foundation_sdk.models import common as cm, dashboard as dm

from . import common as c
from .common import graph, query, steps, tile, tile_against
from .lint import panel_queries, render_query  # noqa: F401  (re-exported for the end-to-end tests)

TILE_H = 5                 # wallboard tile height in grid units: large digits on a TV at 3 m


def sel(metric: str, queue: bool = True, **labels: str) -> str:
    """``metric{queue=~"$queue",k="v",...}``: the one place selectors are spelled."""
    matchers = ([c.QUEUE] if queue else []) + [f'{k}="{v}"' for k, v in labels.items()]
    return f"{metric}{{{','.join(matchers)}}}" if matchers else metric


SL_FORMULAS = ("SL-A A<=T / A; SL-B A<=T / (A + Ab); SL-C A<=T / (A + Ab - Ab<=S) (default); "
               "SL-D A<=T / (A + Ab - Ab<=T); SL-E (A<=T + Ab<=T) / (A + Ab); SL-F (A<=T + Ab<=S) / (A + Ab); "
               "SL-G A<=T / (A + Ab + F), with A answered, Ab abandoned, F flowed out, S the short-abandon time")
WINDOW_WORDS = ("in the selected rolling window ($window, exact by event time at one-second resolution; "
                "today = since the queue's business-day start in its time zone)")
ATTRIBUTION = ("offered counts when the call entered the queue, answered/abandoned/flowed out when its "
               "wait ended")
PER_STEP = "per $__rate_interval ending at each point (increase of the counter)"
PER_MINUTE = ("in calls per minute, averaged over the $__rate_interval ending at each point (rate of the "
              "counter x 60, so the value does not depend on the zoom level)")
TAKEOVER = (" During a takeover two workers may briefly export the queue; the tile shows the larger of "
            "their values (max).")


def latest(expr: str, by: str = "queue") -> str:
    """``max by (<by>) (expr)``: one series per queue even while two workers export it."""
    return f"max by ({by}) ({expr})"


# ==================================================================================================
# Wallboard (TV on the floor): one row of big tiles per queue
# ==================================================================================================

def wb_label() -> stat.Panel:
    return c.label_tile(latest(sel("callcenter_queue_info"), by="queue, label"), width=3, height=TILE_H,
                        link="/d/callpulse-queue?var-queue=${__field.labels.queue}&${__url_time_range}")


def sl_tile_name(expr: str) -> str:
    """Adds the label ``tile="SL <threshold> s"``: the name shown under each service-level value."""
    return f'label_replace({expr}, "tile", "SL $1 s", "threshold", "(.+)")'


def wb_service_level() -> stat.Panel:
    sl = latest(sel("queue:callcenter_service_level:ratio", window="$window"), by="queue, threshold")
    target = latest(sel("callcenter_service_level_target_ratio"), by="queue, threshold")
    return c.tiles_against(
        "Service level",
        f"Service level {WINDOW_WORDS} at every threshold T configured for the queue, one value per "
        "threshold in increasing order, named \"SL T s\": the thresholds are those the queue exports a "
        "target for (callcenter_service_level_target_ratio{threshold}), so a queue set up for 15 s and 30 s "
        f"shows SL 15 s and SL 30 s. By the queue's own formula (callcenter_queue_info{{formula}}; "
        f"{SL_FORMULAS}); recorded series queue:callcenter_service_level:ratio. Each value is coloured "
        "against the queue's target for ITS threshold, at the exact value (79.96 % against 80 % is "
        "orange even though it may round to 80.0 %): green at or above the target, orange from 90 % of "
        "it, red below. – under a threshold means no calls in the window (neither 0 % nor 100 %); a "
        "single – means no calls at any threshold."
        + TAKEOVER,
        "percentunit", sl_tile_name(sl), sl_tile_name(target), key="threshold", name_label="tile",
        name_pattern="SL .*", fallback=0.8, higher_is_better=True, width=6, height=TILE_H, decimals=1)


def wb_calls_waiting() -> stat.Panel:
    return tile_against(
        "Waiting",
        "Calls in the queue now, at the stream clock (callcenter_calls_waiting; calls waiting longer than "
        "orphan_after_seconds are orphans and left out). Colour against the queue's alert limit "
        "callcenter_calls_waiting_limit (default 10; 10 when the alert is off): orange from half the limit, "
        "red at the limit.",
        "short", latest(sel("callcenter_calls_waiting")), latest(sel("callcenter_calls_waiting_limit")),
        fallback=10, higher_is_better=False, width=2, height=TILE_H, decimals=0)


def wb_oldest_wait() -> stat.Panel:
    return tile_against(
        "Oldest wait",
        "Wait so far of the longest-waiting caller now, at the stream clock "
        "(callcenter_oldest_call_wait_seconds; 0 when nobody waits), as hours:minutes:seconds (00:02:05 = "
        "2 min 5 s; whole seconds, cut, not rounded). Colour against the queue's alert limit "
        "callcenter_oldest_call_wait_limit_seconds (default 120 s), at the exact value: orange from half "
        "the limit, red at it." + TAKEOVER,
        "dthms", latest(sel("callcenter_oldest_call_wait_seconds")),
        latest(sel("callcenter_oldest_call_wait_limit_seconds")),
        fallback=120, higher_is_better=False, width=3, height=TILE_H)


def wb_abandon_rate() -> stat.Panel:
    return tile_against(
        "Abandoned",
        f"Abandon rate {WINDOW_WORDS}: abandoned / offered (callcenter_abandon_rate_ratio; {ATTRIBUTION}, "
        "so a short window can briefly exceed 100 %). Colour against the queue's alert limit "
        "callcenter_abandon_rate_limit_ratio (default 10 %): orange from half the limit, red at it. "
        "– means nothing offered in the window." + TAKEOVER,
        "percentunit", latest(sel("callcenter_abandon_rate_ratio", window="$window")),
        latest(sel("callcenter_abandon_rate_limit_ratio")),
        fallback=0.10, higher_is_better=False, width=2, height=TILE_H, decimals=1)


def wb_agents(state: str, title: str, **colour) -> stat.Panel:
    return tile(
        title,
        f"Agents serving the queue in state {state} now (callcenter_agents{{state=\"{state}\"}}); an agent "
        "who is a member of several queues counts in each." + colour.pop("extra", "") + TAKEOVER,
        "short", latest(sel("callcenter_agents", state=state)), width=2, height=TILE_H, decimals=0, **colour)


def wallboard() -> db.Dashboard:
    d = c.new_dashboard(
        "callpulse-wallboard", "callpulse wallboard",
        "Floor wallboard for a TV: one row per queue, latest values, refreshed every 5 s. "
        "Open /d/callpulse-wallboard?kiosk for full screen. Kiosk mode does not scroll and a 1080p "
        "screen fits about 5 queue rows: for more queues, give each screen its own queues "
        "(/d/callpulse-wallboard?kiosk&var-queue=sales&var-queue=support).",
        refresh="5s", time_from="now-15m", window=True)
    d = d.with_row(db.Row("$queue").repeat("queue"))
    for p in (
        wb_label(),
        wb_service_level(),
        wb_calls_waiting(),
        wb_oldest_wait(),
        wb_abandon_rate(),
        wb_agents("available", "Ready", thresholds=steps((None, "orange"), (1, "green")),
                  extra=" Orange at 0: nobody is free to take the next call."),
        wb_agents("on_call", "On call", color="blue"),
        wb_agents("wrap_up", "Wrap-up", color="purple"),
        wb_agents("not_ready", "Not ready", color="#6e6e6e",
                  extra=" Includes agents logged in but not yet ready (reason login)."),
    ):
        d = d.with_panel(p)
    return d


# ==================================================================================================
# Queue detail: every KPI over time
# ==================================================================================================

def q_service_level():
    return graph(
        "Service level by the queue's formula",
        f"Service level per threshold T {WINDOW_WORDS}, by each queue's own formula "
        f"(callcenter_queue_info{{formula}}; {SL_FORMULAS}); recorded series "
        "queue:callcenter_service_level:ratio. Dashed: the configured target per threshold "
        "(callcenter_service_level_target_ratio). Gaps: no calls in the window.",
        "percentunit",
        query(sel("queue:callcenter_service_level:ratio", window="$window"), "{{queue}} {{threshold}} s"),
        query(sel("callcenter_service_level_target_ratio"), "{{queue}} target {{threshold}} s", ref="B"),
        dashed_refs=["B"], min_val=0, max_val=1)


def q_formulas():
    return c.bars_now(
        "All seven formulas now",
        f"Service level per formula and threshold {WINDOW_WORDS}, latest value: {SL_FORMULAS}. Recorded "
        "series queue:callcenter_service_level_by_formula:ratio (from callcenter_window_calls and "
        "callcenter_window_calls_within_threshold); a formula whose denominator is 0 has no bar. "
        "The bars are all one colour on purpose: they compare the formulas with each other, not with "
        "the target (which belongs to the queue's own formula only); the graph \"Service level by the "
        "queue's formula\" draws each target as a dashed line.",
        "percentunit",
        query(sel("queue:callcenter_service_level_by_formula:ratio", window="$window"),
              "{{queue}} {{threshold}} s {{formula}}", instant=True),
        max_val=1, thresholds=steps((None, "blue")))


def q_answer_rate():
    return graph(
        "Answer rate",
        f"Answered / offered {WINDOW_WORDS} (callcenter_answer_rate_ratio; {ATTRIBUTION}, so a short window "
        "can briefly exceed 100 %).",
        "percentunit", query(sel("callcenter_answer_rate_ratio", window="$window"), "{{queue}}"),
        width=8, min_val=0)


def q_abandon_rate():
    return graph(
        "Abandon rate",
        f"Abandoned / offered {WINDOW_WORDS} (callcenter_abandon_rate_ratio; {ATTRIBUTION}). Dashed: the "
        "alert limit callcenter_abandon_rate_limit_ratio (the alert reads the 15m window).",
        "percentunit",
        query(sel("callcenter_abandon_rate_ratio", window="$window"), "{{queue}}"),
        query(sel("callcenter_abandon_rate_limit_ratio"), "{{queue}} limit", ref="B"),
        dashed_refs=["B"], width=8, min_val=0)


def q_calls_per_interval():
    return graph(
        "Offered, answered, abandoned",
        f"Calls {PER_MINUTE}: callcenter_calls_offered_total, _answered_total, _abandoned_total; "
        f"{ATTRIBUTION}.",
        "suffix: calls/min",
        query(f"sum by (queue) (rate({sel('callcenter_calls_offered_total')}[$__rate_interval])) * 60",
              "{{queue}} offered"),
        query(f"sum by (queue) (rate({sel('callcenter_calls_answered_total')}[$__rate_interval])) * 60",
              "{{queue}} answered", ref="B"),
        query(f"sum by (queue) (rate({sel('callcenter_calls_abandoned_total')}[$__rate_interval])) * 60",
              "{{queue}} abandoned", ref="C"),
        width=8, min_val=0)


def q_flow_outs():
    return graph(
        "Flow-outs by reason",
        f"Calls that left the queue neither answered nor abandoned, {PER_MINUTE}, by reason "
        "(callcenter_calls_flowed_out_total{reason}: timeout, exit_key, overflow, callback, transfer, "
        "queue_full, no_agents, other); counted when the wait ended. F in SL-G.",
        "suffix: calls/min",
        query(f"sum by (queue, reason) (rate({sel('callcenter_calls_flowed_out_total')}[$__rate_interval])) * 60",
              "{{queue}} {{reason}}"),
        bars=True, stack=True, width=12, min_val=0)


def q_calls_waiting():
    return graph(
        "Calls waiting",
        "Calls in the queue now at the stream clock (callcenter_calls_waiting, orphans excluded). Dashed: the "
        "alert limit callcenter_calls_waiting_limit.",
        "short",
        query(sel("callcenter_calls_waiting"), "{{queue}}"),
        query(sel("callcenter_calls_waiting_limit"), "{{queue}} limit", ref="B"),
        dashed_refs=["B"], width=8, min_val=0)


def q_waiting_past_threshold():
    return graph(
        "Callers already past T",
        "Callers waiting now whose wait already exceeds the threshold T "
        "(callcenter_calls_waiting_over_threshold): service-level misses in the making.",
        "short", query(sel("callcenter_calls_waiting_over_threshold"), "{{queue}} > {{threshold}} s"),
        width=8, min_val=0)


def q_oldest_wait():
    return graph(
        "Oldest wait",
        "Wait so far of the longest-waiting caller (callcenter_oldest_call_wait_seconds; 0 when nobody "
        "waits). Dashed: the alert limit callcenter_oldest_call_wait_limit_seconds.",
        "s",
        query(sel("callcenter_oldest_call_wait_seconds"), "{{queue}}"),
        query(sel("callcenter_oldest_call_wait_limit_seconds"), "{{queue}} limit", ref="B"),
        dashed_refs=["B"], width=8, min_val=0)


def q_asa():
    return graph(
        "Average speed of answer",
        f"ASA {WINDOW_WORDS}: sum of the waits of answered calls / answered calls "
        "(callcenter_average_answer_wait_seconds; wait = answer time - offer time). Gaps: nothing answered.",
        "s", query(sel("callcenter_average_answer_wait_seconds", window="$window"), "{{queue}}"),
        width=8, min_val=0)


def q_abandon_wait():
    return graph(
        "Average abandon wait",
        f"Average wait before hanging up {WINDOW_WORDS}: sum of the waits of abandoned calls / abandoned calls "
        "(callcenter_average_abandon_wait_seconds). Gaps: nothing abandoned.",
        "s", query(sel("callcenter_average_abandon_wait_seconds", window="$window"), "{{queue}}"),
        width=8, min_val=0)


def q_aht():
    return graph(
        "Average handle time",
        f"AHT {WINDOW_WORDS}: (talk + hold + wrap-up seconds) / handled calls "
        "(callcenter_average_handle_seconds; handled when the conversation ended, wrap-up counted when it "
        "ends). Gaps: nothing handled.",
        "s", query(sel("callcenter_average_handle_seconds", window="$window"), "{{queue}}"),
        width=8, min_val=0)


def q_occupancy():
    return graph(
        "Occupancy",
        f"Agent seconds on_call or wrap_up / agent seconds available, on_call or wrap_up {WINDOW_WORDS} "
        "(callcenter_occupancy_ratio; not_ready excluded; an agent in two queues counts in both).",
        "percentunit", query(sel("callcenter_occupancy_ratio", window="$window"), "{{queue}}"),
        width=12, min_val=0, max_val=1)


def q_wait_heatmap(kind: str):
    metric = f"callcenter_{kind}_wait_seconds_bucket"
    what = {"answer": "answered calls (speed of answer)", "abandon": "abandoned calls (time to hang up)"}[kind]
    return c.wait_heatmap(
        f"Wait distribution: {kind}ed" if kind == "answer" else "Wait distribution: abandoned",
        f"Waits of {what}: calls per wait bucket {PER_STEP} of the histogram callcenter_{kind}_wait_seconds, "
        "summed over the selected queues. Bucket bounds (le) include every service-level threshold and the "
        "short-abandon time, so the row up to T counts the calls within T exactly.",
        f"sum by (le) (increase({sel(metric)}[$__rate_interval]))")


def q_burn(windows: tuple[str, ...], title: str, lines: list[tuple[float, str]], words: str):
    queries = [
        query(sel(f"queue:callcenter_error_budget_burn_rate:rate{w}"), f"{{{{queue}}}} {{{{threshold}}}} s {w}",
              ref=chr(ord("A") + i))
        for i, w in enumerate(windows)
    ]
    return graph(
        title,
        "Error-budget burn rate of the 7-day service-level objective per queue and threshold: "
        "(1 - service level by the queue's formula over the window) / (1 - target), from the counters "
        f"(queue:callcenter_error_budget_burn_rate:rateW). 1 = spending exactly the week's budget. {words}",
        "suffix:x", *queries, lines_at=lines, width=12, min_val=0)


def queue_detail() -> db.Dashboard:
    d = c.new_dashboard(
        "callpulse-queue", "callpulse queue detail",
        "Every KPI of the selected queues over time, the seven service-level formulas side by side, wait "
        "distributions, flow-outs and the error-budget burn rate.",
        refresh="30s", time_from="now-6h", window=True)
    layout = [
        ("Service level", [q_service_level(), q_formulas()]),
        ("Calls", [q_answer_rate(), q_abandon_rate(), q_calls_per_interval(), q_flow_outs(), q_occupancy()]),
        ("Waiting", [q_calls_waiting(), q_waiting_past_threshold(), q_oldest_wait(),
                     q_asa(), q_abandon_wait(), q_aht(),
                     q_wait_heatmap("answer"), q_wait_heatmap("abandon")]),
        ("Error budget (7-day SLO)", [
            q_burn(("1h", "5m", "6h", "30m"), "Burn rate: paging windows",
                   [(1.4, "orange"), (3.36, "red")],
                   "Pages when both windows of a pair are above its line: 3.36 on 1h and 5m (2 % of the week's "
                   "budget in 1 h), 1.4 on 6h and 30m (5 % in 6 h)."),
            q_burn(("1d", "2h", "3d", "6h"), "Burn rate: ticket windows", [(1.0, "orange")],
                   "Tickets when both windows of a pair are above 1 (1d and 2h, 3d and 6h): running over budget."),
        ]),
    ]
    for title, panels in layout:
        d = d.with_row(db.Row(title))
        for p in panels:
            d = d.with_panel(p)
    return d


# ==================================================================================================
# Agents
# ==================================================================================================

def a_now():
    return c.bars_now(
        "Agents now",
        "Agents serving each queue by state now (callcenter_agents{state}: available, on_call, wrap_up, "
        "not_ready); an agent in several queues counts in each.",
        "short", query(sel("callcenter_agents"), "{{queue}} {{state}}", instant=True))


def a_states():
    return graph(
        "Agents by state: $queue",
        "Agents serving the queue by state over time (callcenter_agents{state}), stacked: available, on_call, "
        "wrap_up, not_ready (includes logged in but not yet ready).",
        "short", query(f"sum by (state) ({sel('callcenter_agents')})", "{{state}}"),
        stack=True, width=12, min_val=0)


def a_not_ready():
    return graph(
        "Not ready by reason: $queue",
        "Agents serving the queue who are not_ready now, by reason code "
        "(callcenter_agents_not_ready{reason}), stacked; reason login = logged in but not yet ready.",
        "short", query(f"sum by (reason) ({sel('callcenter_agents_not_ready')})", "{{reason}}"),
        stack=True, width=12, min_val=0)


def agents() -> db.Dashboard:
    d = c.new_dashboard(
        "callpulse-agents", "callpulse agents",
        "Agent states per queue over time and not-ready reasons.",
        refresh="30s", time_from="now-6h", window=True)
    d = d.with_row(db.Row("All selected queues"))
    for p in (a_now(), q_occupancy()):
        d = d.with_panel(p)
    d = d.with_row(db.Row("$queue").repeat("queue"))
    for p in (a_states(), a_not_ready()):
        d = d.with_panel(p)
    return d


# ==================================================================================================
# Pipeline health
# ==================================================================================================

def rate(metric: str, by: str = "instance", **labels: str) -> str:
    return f"sum by ({by}) (rate({sel(metric, queue=False, **labels)}[$__rate_interval]))"


def p_events():
    return graph(
        "Events received by type",
        "Valid events per second received by the workers' first stage, by event type "
        "(rate of callcenter_events_total over $__rate_interval; an agent event counts once).",
        "eps", query(rate("callcenter_events_total", by="type"), "{{type}}"), stack=True)


def p_applied():
    return graph(
        "Events applied per worker",
        "Event copies per second applied to queue state by each worker's second stage (rate of "
        "callcenter_events_applied_total over $__rate_interval; an agent event once per queue).",
        "eps", query(rate("callcenter_events_applied_total"), "{{instance}}"))


def p_lag():
    qs = [query(f"histogram_quantile({q}, sum by (le, instance) "
                f"(rate(callcenter_event_lag_seconds_bucket[$__rate_interval])))",
                f"{{{{instance}}}} p{round(q * 100)}", ref=chr(ord("A") + i))
          for i, q in enumerate((0.5, 0.95, 0.99))]
    return graph(
        "Event lag",
        "Processing delay: wall clock when the second stage applied an event minus the event's own time; "
        "p50, p95 and p99 per worker over $__rate_interval (histogram_quantile of "
        "callcenter_event_lag_seconds; interpolated inside buckets).",
        "s", *qs, min_val=0)


def p_last_event_age():
    return graph(
        "Time since the last event",
        "Now minus the event time of the newest event applied to the queue "
        "(time() - callcenter_last_event_timestamp_seconds); grows while the feed is quiet or stalled. "
        "Dashed: the stall alert limit callcenter_event_stall_limit_seconds (alerts only while open).",
        "s",
        query(f"time() - {sel('callcenter_last_event_timestamp_seconds')}", "{{queue}}"),
        query(sel("callcenter_event_stall_limit_seconds"), "{{queue}} limit", ref="B"),
        dashed_refs=["B"], min_val=0)


def p_duplicates_late():
    return graph(
        "Duplicates and late events",
        "Per second per worker over $__rate_interval: events dropped because their event_id was already "
        "applied (callcenter_events_duplicate_total), and out-of-order events applied within the lateness "
        "(callcenter_events_late_total).",
        "eps",
        query(rate("callcenter_events_duplicate_total"), "{{instance}} duplicate"),
        query(rate("callcenter_events_late_total"), "{{instance}} late", ref="B"),
        width=8, min_val=0)


def p_rejected():
    return graph(
        "Rejected events by reason",
        "Events per second sent to the dead-letter topic, by reason (rate of callcenter_events_rejected_total "
        "over $__rate_interval): malformed_json, not_an_object, unknown_type, schema_violation, future_time, "
        "too_late, unmatched_outcome.",
        "eps", query(rate("callcenter_events_rejected_total", by="reason"), "{{reason}}"),
        bars=True, stack=True, width=8, min_val=0)


def p_orphaned():
    return graph(
        "Orphaned calls",
        "Calls waiting longer than orphan_after_seconds (default 1 h), probably because their end event "
        "was lost (callcenter_calls_orphaned); left out of calls waiting, forgotten after 24 h.",
        "short", query(sel("callcenter_calls_orphaned"), "{{queue}}"), width=8, min_val=0)


def p_workers_up():
    p = tile("Workers up",
             "Scrape health of each callpulse worker (up{job=\"callpulse\"}): 1 = the last scrape of its "
             "/metrics succeeded, 0 = down (alert CallCenterWorkerDown).",
             "none", 'up{job="callpulse"}', width=8, height=6, legend="{{instance}}",
             thresholds=steps((None, "red"), (1, "green")))
    return (p.text_mode(cm.BigValueTextMode.VALUE_AND_NAME)
            .mappings([dm.ValueMap({"0": dm.ValueMappingResult(text="DOWN", color="red"),
                                    "1": dm.ValueMappingResult(text="up", color="green")})])
            .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False)))


def p_queues_per_worker():
    return graph(
        "Queues per worker",
        "Queues each worker exports (count of callcenter_queue_info by instance): each queue is exported by "
        "exactly one worker, and moves when its partition is reassigned.",
        "short", query(f"count by (instance) ({sel('callcenter_queue_info')})", "{{instance}}"),
        width=8, min_val=0)


def p_partitions_held():
    return graph(
        "Input partitions held",
        "Partitions of the events topic each worker's first stage has paused because they ran more than "
        "half the lateness ahead in event time of the slowest partition (callcenter_input_partitions_held); "
        "non-zero while replaying a backlog, 0 on live traffic.",
        "short", query("callcenter_input_partitions_held", "{{instance}}"), width=8, min_val=0)


def pipeline() -> db.Dashboard:
    d = c.new_dashboard(
        "callpulse-pipeline", "callpulse pipeline health",
        "Is the board fresh? Event throughput, lag, data quality and the workers themselves.",
        refresh="30s", time_from="now-3h", window=False)
    layout = [
        ("Throughput", [p_events(), p_applied()]),
        ("Freshness", [p_lag(), p_last_event_age()]),
        ("Data quality", [p_duplicates_late(), p_rejected(), p_orphaned()]),
        ("Workers", [p_workers_up(), p_queues_per_worker(), p_partitions_held()]),
    ]
    for title, panels in layout:
        d = d.with_row(db.Row(title))
        for p in panels:
            d = d.with_panel(p)
    return d


# file name (grafana/dashboards/<name>.json) -> builder
DASHBOARDS = {
    "wallboard": wallboard,
    "queue": queue_detail,
    "agents": agents,
    "pipeline": pipeline,
}


def build_files() -> dict[str, dict]:
    """``{"wallboard.json": {...}, ...}``: every dashboard as JSON data, by file name."""
    return {f"{name}.json": c.to_json(make()) for name, make in DASHBOARDS.items()}


def build_all() -> list[dict]:
    """Every dashboard as JSON data (what grafana/dashboards/*.json hold), wallboard first.
    Use with ``panel_queries`` and ``render_query`` (re-exported here from grafana/lint.py)."""
    return list(build_files().values())
