"""The four callpulse dashboards, one function per panel.

Panels read the worker's windowed gauges (exact rolling windows by event time, picked with the
``window`` variable) and the recording rules of deploy/prometheus/rules/recording.rules.yml; only
per-interval counts, pipeline rates and histograms use ``rate``/``increase`` over
``$__rate_interval``. Metric names: README "Metric reference" and /tmp/cp/contract.md.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import stat
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm

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


# --- Staffing: Erlang C / Erlang A at the live inputs, and the WFM forecast against the actual calls ---

STAFFING_INPUTS = ("the live inputs: arrival rate = calls offered in the 15m window / 900 s, AHT over the 1h "
                   "window, patience = seconds waited by answered and abandoned callers / abandoned calls in the "
                   "1h window (unknown below 5 calls, the patience below 5 abandons)")
STAFFED = ("agents staffed (available + on_call + wrap_up; not_ready left out; an agent in several queues counts "
           "in each)")
MODELS = ("model erlang_c (M/M/c: nobody hangs up) or erlang_a (M/M/c+M: callers hang up after an "
          "exponential patience, the live patience); erlang_a is absent while the patience is unknown")
FORECAST_WORDS = ("The forecast is the WFM forecast file (stream.forecast_file / CALLPULSE_FORECAST_FILE: offered "
                  "calls per queue and 15- or 30-minute interval, local time in the queue's time zone); \"day\" is the "
                  "queue's business day, \"to date\" the forecast pro-rated to the stream clock. Nothing is shown for "
                  "a queue without a forecast for its current business day")


def queue_tiles(expr: str) -> str:
    """Adds the label ``tile`` = the queue id: the name shown under each queue's value."""
    return f'label_replace({expr}, "tile", "$1", "queue", "(.+)")'


# Shows each queue's tile and drops the columns of the joined table (see common.tiles_against).
QUEUE_TILE_PATTERN = "(?!(?:queue|tile|value|reference)$).+"


def q_agents_short():
    return c.tiles_against(
        "Agents short now",
        f"Agents each queue is short of now (callcenter_agents_short): agents required for its service-level "
        f"target minus {STAFFED}, taking the threshold that needs the most agents, by Erlang A when the live "
        "patience is known, else by Erlang C. Negative = agents to spare. Green at 0 or below, orange when short "
        "by at least 1, red from the queue's understaffed alert limit (callcenter_understaffed_limit_agents, "
        "config alert_understaffed_agents, default 2; 2 is used when the alert is off). – : inputs unknown "
        "(below 5 calls in the windows)." + TAKEOVER,
        "short", queue_tiles(latest(sel("callcenter_agents_short"))),
        queue_tiles(latest(sel("callcenter_understaffed_limit_agents"))),
        key="queue", name_label="tile", name_pattern=QUEUE_TILE_PATTERN, numeric_key=False,
        # Percent of the limit (min 0): any shortage (1 agent or more, agents are whole) is above 0 %.
        percent_steps=[(None, "green"), (0.01, "orange"), (100.0, "red")],
        fallback=2, higher_is_better=False, width=4, height=8, decimals=0)


def q_understaffed_for():
    return c.tiles_against(
        "Short for",
        "How long each queue has been short of at least its alert limit of agents without a break "
        "(callcenter_understaffed_seconds, at the stream clock; 0 while not short), as hours:minutes:seconds. "
        "The alert CallCenterUnderstaffed (a ticket) fires about a minute after it reaches the queue's "
        "alert_understaffed_seconds (callcenter_understaffed_limit_seconds, default 900 s = 00:15:00): green "
        "below half of it, orange from half, red at it. – : the alert is off for the queue "
        "(alert_understaffed_agents 0) or its inputs are unknown." + TAKEOVER,
        "dthms", queue_tiles(latest(sel("callcenter_understaffed_seconds"))),
        queue_tiles(latest(sel("callcenter_understaffed_limit_seconds"))),
        key="queue", name_label="tile", name_pattern=QUEUE_TILE_PATTERN, numeric_key=False,
        fallback=900, higher_is_better=False, width=4, height=8)


def q_agents_required():
    return graph(
        "Agents required vs staffed",
        f"Agents required (callcenter_agents_required): the fewest agents whose projected service level (share "
        f"of all callers answered within T) reaches the queue's target at T, from {STAFFING_INPUTS}, by {MODELS}. "
        f"Thick: {STAFFED} (callcenter_agents_staffed). Dashed: agents "
        "planned for the current interval in the forecast file (callcenter_forecast_planned_agents; absent "
        "without a forecast). Required above staffed = short of agents.",
        "short",
        query(latest(sel("callcenter_agents_required"), by="queue, model, threshold"),
              "{{queue}} required {{model}} {{threshold}} s"),
        query(latest(sel("callcenter_agents_staffed")), "{{queue}} staffed", ref="B"),
        query(latest(sel("callcenter_forecast_planned_agents")), "{{queue}} planned", ref="C"),
        dashed_refs=["C"], width=16, min_val=0,
    ).line_interpolation(cm.LineInterpolation.STEP_AFTER).override_by_query(
        "B", [dm.DynamicConfigValue(id_val="custom.lineWidth", value=4)])


def q_projected_service_level():
    return graph(
        "Projected vs actual service level",
        f"Projected (callcenter_projected_service_level_ratio): the share of all callers answered within T that "
        f"{STAFFED} now can be expected to give at {STAFFING_INPUTS}, by {MODELS}; erlang_c is also "
        "absent while the staffing cannot carry the load. Thick: the actual service level in the 15m window "
        "by the queue's own formula (callcenter_service_level_ratio{window=\"15m\"}; 15m like the arrival rate, "
        "whatever the window picker says). Dashed: the target per threshold (callcenter_service_level_target_ratio). "
        "Projected far below actual: the queue is about to get worse; far above: something other than staffing "
        "(not-ready agents, routing) holds it back.",
        "percentunit",
        query(latest(sel("callcenter_projected_service_level_ratio"), by="queue, model, threshold"),
              "{{queue}} projected {{model}} {{threshold}} s"),
        query(latest(sel("callcenter_service_level_ratio", window="15m"), by="queue, threshold"),
              "{{queue}} actual 15m {{threshold}} s", ref="B"),
        query(latest(sel("callcenter_service_level_target_ratio"), by="queue, threshold"),
              "{{queue}} target {{threshold}} s", ref="C"),
        dashed_refs=["C"], width=6, min_val=0, max_val=1,
    ).override_by_query("B", [dm.DynamicConfigValue(id_val="custom.lineWidth", value=4)])


def q_projected_asa():
    return graph(
        "Projected vs actual ASA",
        f"Projected average speed of answer (callcenter_projected_answer_wait_seconds: mean wait of the callers "
        f"who are answered) at {STAFFED} now and {STAFFING_INPUTS}, by {MODELS}; erlang_c is also absent "
        "while the staffing cannot carry the load (its queue would grow without bound). Thick: the actual ASA in the "
        "15m window (callcenter_average_answer_wait_seconds{window=\"15m\"}).",
        "s",
        query(latest(sel("callcenter_projected_answer_wait_seconds"), by="queue, model"),
              "{{queue}} projected {{model}}"),
        query(latest(sel("callcenter_average_answer_wait_seconds", window="15m")), "{{queue}} actual 15m", ref="B"),
        width=6, min_val=0,
    ).override_by_query("B", [dm.DynamicConfigValue(id_val="custom.lineWidth", value=4)])


def q_projected_abandon_rate():
    return graph(
        "Projected vs actual abandon rate",
        "Projected share of callers who hang up while waiting (callcenter_projected_abandon_rate_ratio"
        f"{{model=\"erlang_a\"}}) at {STAFFED} now and {STAFFING_INPUTS}, by Erlang A (absent while the "
        "patience is unknown; Erlang C assumes nobody hangs up, so its 0 is not drawn). Thick: the actual abandon "
        "rate in the 15m window, abandoned / offered (callcenter_abandon_rate_ratio{window=\"15m\"}). Dashed: the "
        "alert limit callcenter_abandon_rate_limit_ratio.",
        "percentunit",
        query(latest(sel("callcenter_projected_abandon_rate_ratio", model="erlang_a")), "{{queue}} projected erlang_a"),
        query(latest(sel("callcenter_abandon_rate_ratio", window="15m")), "{{queue}} actual 15m", ref="B"),
        query(latest(sel("callcenter_abandon_rate_limit_ratio")), "{{queue}} limit", ref="C"),
        dashed_refs=["C"], width=6, min_val=0,
    ).override_by_query("B", [dm.DynamicConfigValue(id_val="custom.lineWidth", value=4)])


def q_staffing_inputs():
    right_axis_seconds = [dm.DynamicConfigValue(id_val="unit", value="s"),
                          dm.DynamicConfigValue(id_val="custom.axisPlacement", value="right")]
    return graph(
        "Staffing inputs",
        "What the staffing models are fed, per queue. Left axis, calls per hour: the arrival rate = calls offered "
        "in the 15m window / 900 s, x 3600 (callcenter_staffing_arrivals_per_second). Right axis, seconds: AHT = "
        "(talk + hold + wrap-up seconds) / handled calls in the 1h window (callcenter_staffing_handle_seconds), "
        "and mean patience = seconds waited by answered and abandoned callers / abandoned calls in the 1h window "
        "(callcenter_staffing_patience_seconds, Erlang A only). Each is absent below 5 calls (5 abandons for "
        "the patience): the models then show nothing.",
        "suffix: calls/h",
        query(f"{latest(sel('callcenter_staffing_arrivals_per_second'))} * 3600", "{{queue}} arrivals"),
        query(latest(sel("callcenter_staffing_handle_seconds")), "{{queue}} AHT", ref="B"),
        query(latest(sel("callcenter_staffing_patience_seconds")), "{{queue}} patience", ref="C"),
        width=6, min_val=0,
    ).override_by_query("B", right_axis_seconds).override_by_query("C", right_axis_seconds)


def q_forecast_day():
    return graph(
        "Offered today vs forecast",
        f"Calls offered so far in the queue's business day (callcenter_actual_offered_calls{{period=\"day\"}}, "
        "counted when the call entered the queue) against the forecast to date "
        "(callcenter_forecast_offered_to_date_calls{period=\"day\"}): the two lines should run together. "
        "Dashed: the forecast for the whole day (callcenter_forecast_offered_calls{period=\"day\"}) and the "
        "reforecast of the whole day, actual so far + the rest of the day's forecast scaled by actual / forecast "
        "to date (callcenter_reforecast_offered_calls{period=\"day\"}; absent below 10 forecast calls to date). "
        f"{FORECAST_WORDS}.",
        "short",
        query(latest(sel("callcenter_actual_offered_calls", period="day")), "{{queue}} offered"),
        query(latest(sel("callcenter_forecast_offered_to_date_calls", period="day")), "{{queue}} forecast to date",
              ref="B"),
        query(latest(sel("callcenter_forecast_offered_calls", period="day")), "{{queue}} forecast whole day",
              ref="C"),
        query(latest(sel("callcenter_reforecast_offered_calls", period="day")), "{{queue}} reforecast whole day",
              ref="D"),
        dashed_refs=["C", "D"], width=10, min_val=0)


def q_forecast_interval():
    return graph(
        "Offered this interval vs forecast",
        f"The current forecast interval (15 or 30 minutes, the forecast file's): calls offered so far in it "
        "(callcenter_actual_offered_calls{period=\"interval\"}) against its forecast to date "
        "(callcenter_forecast_offered_to_date_calls{period=\"interval\"}); dashed, its whole forecast "
        "(callcenter_forecast_offered_calls{period=\"interval\"}). The lines restart at every interval: each "
        f"peak of the solid line is an interval's final count next to its dashed forecast. {FORECAST_WORDS}.",
        "short",
        query(latest(sel("callcenter_actual_offered_calls", period="interval")), "{{queue}} offered"),
        query(latest(sel("callcenter_forecast_offered_to_date_calls", period="interval")),
              "{{queue}} forecast to date", ref="B"),
        query(latest(sel("callcenter_forecast_offered_calls", period="interval")), "{{queue}} forecast interval",
              ref="C"),
        dashed_refs=["C"], width=8, min_val=0)


RATIO_STEPS = ((None, "red"), (0.8, "orange"), (0.9, "green"), (1.1, "orange"), (1.2, "red"))
WAPE_STEPS = ((None, "green"), (0.15, "orange"), (0.25, "red"))


def q_forecast_accuracy():
    p = tile(
        "Forecast accuracy today",
        "Per queue, for its business day so far. \"vs forecast\": calls offered / forecast to date "
        "(callcenter_offered_vs_forecast_ratio{period=\"day\"}; 110 % = 10 % more calls than forecast; absent "
        "below 10 forecast calls to date): green from 90 % up to 110 %, orange from 80 % and from 110 %, red "
        "below 80 % and from 120 %. "
        "\"WAPE\": weighted absolute percentage error of the offered calls over the day's ended intervals, "
        "sum |actual - forecast| / sum actual (callcenter_forecast_wape_ratio; 0 % = perfect; absent before the "
        f"first ended interval with calls): green below 15 %, orange to 25 %, red from 25 %. {FORECAST_WORDS}."
        + TAKEOVER,
        "percentunit", latest(sel("callcenter_offered_vs_forecast_ratio", period="day")),
        legend="{{queue}} vs forecast", thresholds=steps(*RATIO_STEPS), width=6, height=8, decimals=0)
    return (p.with_target(query(latest(sel("callcenter_forecast_wape_ratio")), "{{queue}} WAPE", ref="B",
                                instant=True))
            .text_mode(cm.BigValueTextMode.VALUE_AND_NAME)
            .orientation(cm.VizOrientation.HORIZONTAL)
            .override_by_query("B", [dm.DynamicConfigValue(id_val="thresholds", value={
                "mode": "absolute", "steps": [{"value": v, "color": col} for v, col in WAPE_STEPS]})]))


# --- Quality: surveys (CSAT, NPS, FCR), outbound dialling, callbacks, cost per call --------------------

SURVEY_TIME = ("surveys count at the survey's own time (it may come hours after the call), in the queue the "
               "survey names")
RECORDED_DAYS = ("1d and 7d are the recording rules over the survey counters (from when the rules were deployed: "
                 "less history than the range in the first days)")
CSAT_WORDS = "top-two-box CSAT = answers 4 or 5 / CSAT answers on the 1-5 scale"
NPS_WORDS = "NPS = 100 x (promoters, answers 9-10, minus detractors, answers 0-6) / NPS answers, -100 to 100"
FCR_WORDS = "first-call resolution by survey = answers resolved=true / answers to the resolved question"
NO_TARGET = (" All one colour: callpulse has no configured target for it, so the bars compare windows and "
             "queues, not a goal.")


def by_window(gauge: str, record: str, legend_unit: str = "", **labels: str) -> list:
    """One instant query per worker window (5m ... today, in that order), then the 1d and 7d recorded
    series: the bars of a "<KPI> by window" panel come out in window order."""
    qs = [query(latest(sel(gauge, window=w, **labels)), f"{{{{queue}}}} {w}{legend_unit}", ref=chr(ord("A") + i),
                instant=True)
          for i, w in enumerate(c.WINDOWS)]
    n = len(qs)
    return qs + [query(latest(sel(f"{record}{d}", **labels)), f"{{{{queue}}}} {d}{legend_unit}", ref=chr(ord("A") + n + i),
                       instant=True)
                 for i, d in enumerate(("1d", "7d"))]


def q_csat_by_window():
    return c.bars_now(
        "CSAT by window",
        f"Customer satisfaction, {CSAT_WORDS}, per queue in each of the worker's windows (callcenter_csat_ratio"
        f"{{window}}: 5m, 15m, 30m, 1h, today) and over the last day and week (queue:callcenter_csat:ratio_rate1d, "
        f"queue:callcenter_csat:ratio_rate7d); {SURVEY_TIME}; {RECORDED_DAYS}. No bar: no CSAT answer in that "
        "window (neither 0 % nor 100 %). Short windows hold few answers: read them with the 7d bar and the answer "
        "counts (\"Survey answers, last 7 days\")." + NO_TARGET,
        "percentunit", *by_window("callcenter_csat_ratio", "queue:callcenter_csat:ratio_rate"), width=6, max_val=1)


def q_nps_by_window():
    return c.bars_now(
        "NPS by window",
        f"Net promoter score, {NPS_WORDS}, per queue in each of the worker's windows (callcenter_net_promoter_score"
        "{window}) and over the last day and week (queue:callcenter_net_promoter_score:ratio_rate1d, _7d); "
        f"{SURVEY_TIME}; {RECORDED_DAYS}. No bar: no NPS answer in that window." + NO_TARGET,
        "none", *by_window("callcenter_net_promoter_score", "queue:callcenter_net_promoter_score:ratio_rate"),
        width=6, max_val=100).min(-100)


def q_fcr_by_window():
    return c.bars_now(
        "First-call resolution by window",
        f"{FCR_WORDS[0].upper()}{FCR_WORDS[1:]}, per queue in each of the worker's windows "
        "(callcenter_first_call_resolution_ratio{method=\"survey\", window}) and over the last day and week "
        "(queue:callcenter_first_call_resolution:ratio_rate1d, _7d); "
        f"{SURVEY_TIME}; {RECORDED_DAYS}. No bar: no answer to the resolved question in that window." + NO_TARGET,
        "percentunit",
        *by_window("callcenter_first_call_resolution_ratio", "queue:callcenter_first_call_resolution:ratio_rate",
                   method="survey"),
        width=6, max_val=1)


def q_repeat_caller_fcr_by_window():
    return c.bars_now(
        "Repeat-caller FCR by window",
        "First-call resolution by repeat caller = handled calls whose caller did not call the queue again within "
        "repeat_caller_seconds (default 24 h) / handled calls whose period passed, per queue in each of the "
        "worker's windows (callcenter_first_call_resolution_ratio{method=\"repeat_caller\", window}) and over the "
        "last day and week (queue:callcenter_first_call_resolution:ratio_rate1d, _7d, method=\"repeat_caller\"). "
        "A call counts once its period has passed, so these are final and a period late. No bar: no call checked "
        "in that window, or no CALLPULSE_CALLER_HASH_KEY." + NO_TARGET,
        "percentunit",
        *by_window("callcenter_first_call_resolution_ratio", "queue:callcenter_first_call_resolution:ratio_rate",
                   method="repeat_caller"),
        width=6, max_val=1)


def q_csat_fcr_over_time():
    return graph(
        "CSAT and FCR over time",
        f"{CSAT_WORDS[0].upper()}{CSAT_WORDS[1:]} (callcenter_csat_ratio) and {FCR_WORDS} "
        f"(callcenter_first_call_resolution_ratio{{method=\"survey\"}}) {WINDOW_WORDS}. Dashed: the same over "
        "the last 7 days (queue:callcenter_csat:ratio_rate7d, queue:callcenter_first_call_resolution:ratio_rate7d). "
        f"{SURVEY_TIME[0].upper()}{SURVEY_TIME[1:]}. Gaps: no answers in the window.",
        "percentunit",
        query(latest(sel("callcenter_csat_ratio", window="$window")), "{{queue}} CSAT"),
        query(latest(sel("queue:callcenter_csat:ratio_rate7d")), "{{queue}} CSAT 7d", ref="B"),
        query(latest(sel("callcenter_first_call_resolution_ratio", window="$window", method="survey")),
              "{{queue}} FCR", ref="C"),
        query(latest(sel("queue:callcenter_first_call_resolution:ratio_rate7d", method="survey")), "{{queue}} FCR 7d", ref="D"),
        dashed_refs=["B", "D"], width=8, min_val=0, max_val=1)


def q_nps_over_time():
    return graph(
        "NPS over time",
        f"{NPS_WORDS} (callcenter_net_promoter_score) {WINDOW_WORDS}. Dashed: over the last 7 days "
        f"(queue:callcenter_net_promoter_score:ratio_rate7d). {SURVEY_TIME[0].upper()}{SURVEY_TIME[1:]}. "
        "Gaps: no answers in the window.",
        "none",
        query(latest(sel("callcenter_net_promoter_score", window="$window")), "{{queue}} NPS"),
        query(latest(sel("queue:callcenter_net_promoter_score:ratio_rate7d")), "{{queue}} NPS 7d", ref="B"),
        dashed_refs=["B"], width=8, min_val=-100, max_val=100)


def q_csat_average():
    return graph(
        "Mean CSAT score",
        f"Mean CSAT answer on the 1-5 scale (callcenter_csat_average_score) {WINDOW_WORDS}. Dashed: over the "
        "last 7 days (queue:callcenter_csat_score:mean7d). Gaps: no answers in the window.",
        "none",
        query(latest(sel("callcenter_csat_average_score", window="$window")), "{{queue}} mean"),
        query(latest(sel("queue:callcenter_csat_score:mean7d")), "{{queue}} mean 7d", ref="B"),
        dashed_refs=["B"], width=4, min_val=1, max_val=5)


def q_survey_answers():
    return c.bars_now(
        "Survey answers, last 7 days",
        "Answers per queue over the last 7 days, by question: CSAT "
        "(queue:callcenter_survey_csat_answers:increase7d), NPS (queue:callcenter_survey_nps_answers:increase7d) "
        "and resolved (queue:callcenter_survey_resolved_answers:increase7d), the denominators of the 7d scores; "
        "a score from a handful of answers is noise. From the survey counters (extrapolated to the range, so "
        f"not always whole numbers); {SURVEY_TIME}.",
        "short",
        query(latest(sel("queue:callcenter_survey_csat_answers:increase7d")), "{{queue}} CSAT", instant=True),
        query(latest(sel("queue:callcenter_survey_nps_answers:increase7d")), "{{queue}} NPS", ref="B", instant=True),
        query(latest(sel("queue:callcenter_survey_resolved_answers:increase7d")), "{{queue}} resolved", ref="C",
              instant=True),
        width=4)


OUTBOUND_LIVE = ("a live connect is an attempt whose result is in the queue's outbound_connected_results (default "
                 "connected)")
OUTBOUND_ABANDON = ("abandoned = a live connect that reached no agent within outbound_abandon_seconds (default 2 s): "
                    "the attempt named no agent_id and no call.answered of the call followed in time")


def q_outbound_connect_rate():
    return graph(
        "Outbound connect rate",
        f"Live connects / dial attempts (callcenter_outbound_connect_rate_ratio) {WINDOW_WORDS}; {OUTBOUND_LIVE}. "
        "Dashed: over the last day (queue:callcenter_outbound_connect:ratio_rate1d, from the counters). Gaps: "
        "nothing dialled.",
        "percentunit",
        query(latest(sel("callcenter_outbound_connect_rate_ratio", window="$window")), "{{queue}}"),
        query(latest(sel("queue:callcenter_outbound_connect:ratio_rate1d")), "{{queue}} 1d", ref="B"),
        dashed_refs=["B"], width=8, min_val=0, max_val=1)


def q_outbound_abandon_rate():
    return graph(
        "Outbound abandon rate",
        f"Abandoned outbound calls / live connects of the queue, all campaigns together "
        f"(callcenter_outbound_abandon_rate_ratio) {WINDOW_WORDS}; {OUTBOUND_ABANDON}. Dashed: over the last day "
        "(queue:callcenter_outbound_abandon:ratio_rate1d) and the queue's limit (callcenter_outbound_abandon_limit_ratio, "
        "config outbound_abandon_limit, default 3 %). The alert reads the 30-day figure per campaign (next panel), "
        "not these: a bad hour here is a warning sign, not yet a breach.",
        "percentunit",
        query(latest(sel("callcenter_outbound_abandon_rate_ratio", window="$window")), "{{queue}}"),
        query(latest(sel("queue:callcenter_outbound_abandon:ratio_rate1d")), "{{queue}} 1d", ref="B"),
        query(latest(sel("callcenter_outbound_abandon_limit_ratio")), "{{queue}} limit", ref="C"),
        dashed_refs=["B", "C"], width=8, min_val=0)


def q_outbound_abandon_30d():
    return graph(
        "Outbound abandon rate, 30 days, by campaign",
        f"The regulators' measure (US FTC/TCPA, UK Ofcom): abandoned / live connects per campaign over the "
        f"queue's last 30 business days, kept by the worker (callcenter_outbound_abandon_30d_ratio{{campaign}}; "
        f"{OUTBOUND_ABANDON}). Campaign empty: attempts without a campaign; \"other\": every campaign beyond the 20 "
        "with the most live connects, summed. Dashed: the queue's limit (callcenter_outbound_abandon_limit_ratio). "
        "The alert CallCenterOutboundAbandonOverLimit (a ticket) fires when a campaign stays above it for 5 minutes "
        "with at least 100 live connects in the 30 days (callcenter_outbound_live_connects_30d).",
        "percentunit",
        query(latest(sel("callcenter_outbound_abandon_30d_ratio"), by="queue, campaign"), "{{queue}} {{campaign}}"),
        query(latest(sel("callcenter_outbound_abandon_limit_ratio")), "{{queue}} limit", ref="B"),
        dashed_refs=["B"], width=8, min_val=0)


def q_callbacks_open():
    return graph(
        "Callbacks open",
        "Callbacks requested and not completed yet (callcenter_callbacks_open: no connected or cancelled "
        "completion; no_answer and failed leave them open for a retry; forgotten after 7 days), and of them those "
        "requested longer ago than the queue's callback_open_limit_seconds (callcenter_callbacks_open_over_limit, "
        "default 3600 s; absent when the limit is 0). The alert CallCenterCallbacksOverdue (a ticket) fires when "
        "any is over the limit for 15 minutes while the queue is open.",
        "short",
        query(latest(sel("callcenter_callbacks_open")), "{{queue}} open"),
        query(latest(sel("callcenter_callbacks_open_over_limit")), "{{queue}} over limit", ref="B"),
        width=6, min_val=0,
    ).override_by_query("B", [dm.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": "red"})])


def q_callback_completion():
    return graph(
        "Callback completion rate",
        f"Callbacks completed connected / callbacks requested (callcenter_callback_completion_rate_ratio) "
        f"{WINDOW_WORDS}; each counted at its own time, so a window in which older requests are worked off can "
        "exceed 100 %. Dashed: over the last day (queue:callcenter_callback_completion:ratio_rate1d). Gaps: no "
        "request in the window.",
        "percentunit",
        query(latest(sel("callcenter_callback_completion_rate_ratio", window="$window")), "{{queue}}"),
        query(latest(sel("queue:callcenter_callback_completion:ratio_rate1d")), "{{queue}} 1d", ref="B"),
        dashed_refs=["B"], width=6, min_val=0)


def q_callback_wait():
    return graph(
        "Average callback wait",
        f"Mean time from a callback's request to its connected completion (callcenter_average_callback_wait_seconds) "
        f"{WINDOW_WORDS}, over the connected callbacks whose request is known. Gaps: none connected in the window.",
        "s", query(latest(sel("callcenter_average_callback_wait_seconds", window="$window")), "{{queue}}"),
        width=6, min_val=0)


def q_cost_per_call():
    return graph(
        "Cost per handled call today",
        "Logged-in agent-hours today (every state, not_ready included: paid time) x the queue's cost_per_agent_hour "
        "/ calls handled today, in the queue's currency (callcenter_cost_per_handled_call{window=\"today\", "
        "currency}; the worker computes it for today only, whatever the window picker says). Only for queues with a "
        "cost_per_agent_hour (callcenter_cost_per_agent_hour); gaps: nothing handled yet. An agent serving several "
        "queues counts fully in each, so with shared agents this is an upper bound.",
        "short",
        query(latest(sel("callcenter_cost_per_handled_call", window="today"), by="queue, currency"),
              "{{queue}} {{currency}}"),
        width=6, min_val=0,
    ).decimals(2)


def queue_detail() -> db.Dashboard:
    d = c.new_dashboard(
        "callpulse-queue", "callpulse queue detail",
        "Every KPI of the selected queues over time, the seven service-level formulas side by side, staffing "
        "(agents required by Erlang C and Erlang A against agents staffed, projections at the current staffing, "
        "the forecast against the actual calls), wait distributions, flow-outs, the error-budget burn rate, and "
        "quality (CSAT, NPS and first-call resolution from surveys, outbound dialling, callbacks, cost per call).",
        refresh="30s", time_from="now-6h", window=True)
    layout = [
        ("Service level", [q_service_level(), q_formulas()]),
        ("Staffing", [q_agents_short(), q_understaffed_for(), q_agents_required(),
                      q_projected_service_level(), q_projected_asa(), q_projected_abandon_rate(), q_staffing_inputs(),
                      q_forecast_day(), q_forecast_interval(), q_forecast_accuracy()]),
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
        ("Quality", [q_csat_by_window(), q_nps_by_window(), q_fcr_by_window(), q_repeat_caller_fcr_by_window(),
                     q_csat_fcr_over_time(), q_nps_over_time(), q_csat_average(), q_survey_answers(),
                     q_outbound_connect_rate(), q_outbound_abandon_rate(), q_outbound_abandon_30d(),
                     q_callbacks_open(), q_callback_completion(), q_callback_wait(), q_cost_per_call()]),
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


# Agents row: per-queue aggregates only (no agent ids in labels): callcenter_agents{queue,state},
# callcenter_agents_not_ready{queue,reason}, callcenter_occupancy_ratio, callcenter_agent_logged_in_seconds_total.

LOGGED_IN_NOW = f"sum by (queue) ({latest(sel('callcenter_agents'), by='queue, state')})"


def a_logged_in():
    return graph(
        "Agents logged in",
        "Solid: agents serving the queue who are logged in now, in any state (available + on_call + wrap_up + "
        "not_ready, from callcenter_agents{state}). Dashed: agents logged in on average over the $__rate_interval "
        "ending at each point = agent-seconds logged in per second (rate of callcenter_agent_logged_in_seconds_total; "
        "paid time, not_ready included). An agent who serves several queues counts in each.",
        "short",
        query(LOGGED_IN_NOW, "{{queue}} now"),
        query(f"sum by (queue) (rate({sel('callcenter_agent_logged_in_seconds_total')}[$__rate_interval]))",
              "{{queue}} average", ref="B"),
        dashed_refs=["B"], width=8, min_val=0)


def a_not_ready_share():
    return graph(
        "Not ready share",
        "Agents not_ready now / agents logged in now, per queue (callcenter_agents{state=\"not_ready\"} over all "
        "states of callcenter_agents): the share of logged-in (paid) agents who cannot take calls, breaks, "
        "meetings and just-logged-in agents included. Gaps: nobody logged in. Occupancy (above) leaves these "
        "agents out; this is the part it does not show.",
        "percentunit",
        query(f"{latest(sel('callcenter_agents', state='not_ready'))} / ({LOGGED_IN_NOW} > 0)", "{{queue}}"),
        width=8, min_val=0, max_val=1)


def a_not_ready_reasons():
    return c.bars_now(
        "Not ready by reason now",
        "Agents serving each queue who are not_ready now, by the reason code of their latest state change "
        "(callcenter_agents_not_ready{reason}; login = logged in but not yet ready, joined = just added to the "
        "queue, unknown = no reason given); an agent in several queues counts in each.",
        "short", query(latest(sel("callcenter_agents_not_ready"), by="queue, reason"), "{{queue}} {{reason}}",
                       instant=True),
        width=8)


def agents() -> db.Dashboard:
    d = c.new_dashboard(
        "callpulse-agents", "callpulse agents",
        "Agent states per queue over time, agents logged in, the not-ready share and not-ready reasons "
        "(per-queue aggregates only: no agent ids).",
        refresh="30s", time_from="now-6h", window=True)
    d = d.with_row(db.Row("All selected queues"))
    for p in (a_now(), q_occupancy()):
        d = d.with_panel(p)
    d = d.with_row(db.Row("Agents"))
    for p in (a_logged_in(), a_not_ready_share(), a_not_ready_reasons()):
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


def p_forecast_file():
    return graph(
        "Forecast file loads",
        "Per worker: loads of a changed forecast file (changes of callcenter_forecast_loaded_timestamp_seconds) "
        "and failed ones (increase of callcenter_forecast_load_errors_total; the worker logs the file, line "
        "and problem, and keeps the previous forecast), over $__rate_interval. No data: no forecast file "
        "configured.",
        "short",
        query("changes(callcenter_forecast_loaded_timestamp_seconds[$__rate_interval])", "{{instance}} loaded"),
        query("increase(callcenter_forecast_load_errors_total[$__rate_interval])", "{{instance}} failed", ref="B"),
        bars=True, width=8, min_val=0)


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
        ("Data quality", [p_duplicates_late(), p_rejected(), p_orphaned(), p_forecast_file()]),
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
