"""Agent interval and day records and the scorecard (issue 15), against hand-computed figures.

The shift is test_agent_model.shift(): queue продажи (Europe/Moscow), 15- and 30-minute intervals
from T0 = 08:00Z = 11:00 local.
"""

import datetime
import re

import orjson
import pytest
from test_agent_model import T0, feed, make, shift, zones

from callpulse.config import DEFAULT_SCORECARD, ConfigError, load_config
from callpulse.kpi.agents import AgentModel, AgentSettings
from callpulse.kpi.scorecard import Measure, measure_score, score_card
from helpers import epoch, event

A = {"agent_id": "a1"}
Q = {"queue": "продажи"}


def closed(m: AgentModel) -> list[dict]:
    records, m.closed = m.closed, []
    return records


def by_period(records: list[dict]) -> dict:
    return {(r["interval_minutes"] or "day", r["start_epoch"] - T0): r for r in records}


def test_interval_records_of_a_shift_by_hand():
    m = make()
    feed(m, shift() + [event("call.hold_ended", T0 + 3661, call_id="c3", **Q, **A)])
    records = by_period(closed(m))
    assert sorted(records) == [(15, 0), (15, 900), (15, 1800), (15, 2700), (30, 0), (30, 1800)]
    first, second, lunch, last = (records[(15, s)] for s in (0, 900, 1800, 2700))
    assert first["start"] == "2026-12-01T11:00:00+03:00" and first["end"] == "2026-12-01T11:15:00+03:00"
    assert (first["timezone"], first["business_day"], first["final"], first["agent_name"]) == ("Europe/Moscow", "2026-12-01", True, "Анна")
    # 11:00-11:15: login 300 s, available 300 s, on call 300 s; c1 answered, not ended yet
    assert (first["answered"], first["handled"], first["talk_seconds"]) == (1, 0, 0)
    assert first["state_seconds"] == pytest.approx({"logged_in": 900, "available": 300, "on_call": 300, "wrap_up": 0, "not_ready": 300})
    # 11:15-11:30: c1 ends at +900 (talk 240, hold 60, wrap 60), c2 rings unanswered, is answered
    # and transferred (talk 300, wrap 30); wrap 60 + 30, available 240 + 270, on call 300
    assert (second["answered"], second["handled"], second["transfers"], second["ring_no_answers"]) == (1, 2, 1, 1)
    assert (second["talk_seconds"], second["hold_seconds"], second["wrapup_seconds"]) == (540, 60, 90)
    assert second["state_seconds"] == pytest.approx({"logged_in": 900, "available": 510, "on_call": 300, "wrap_up": 90, "not_ready": 0})
    # an interval's occupancy is by states (on call + wrap-up) / (logged in - not ready): (300 + 90) / 900
    assert second["occupancy"] == pytest.approx(390 / 900) and second["csat_ratio"] == pytest.approx(0.5)
    assert second["dispositions"] == {"sale": 1}
    # 11:30-11:45 the lunch break: occupancy undefined (no time available for calls), utilization 0
    assert lunch["not_ready_seconds_by_reason"] == pytest.approx({"обед": 900})
    assert lunch["occupancy"] is None and lunch["utilization"] == 0
    # 11:45-12:00: available 300, then c3 from +3000: the open call's state counts up to the end
    assert last["state_seconds"] == pytest.approx({"logged_in": 900, "available": 300, "on_call": 600, "wrap_up": 0, "not_ready": 0})
    # the 30-minute intervals are the sums
    assert records[(30, 0)]["handled"] == 2 and records[(30, 0)]["state_seconds"]["logged_in"] == pytest.approx(1800)
    assert records[(30, 1800)]["state_seconds"] == pytest.approx({"logged_in": 1800, "available": 300, "on_call": 600, "wrap_up": 0, "not_ready": 900})
    # nothing closes twice, and the next interval is still open
    feed(m, [event("call.hold_ended", T0 + 3700, call_id="c3", **Q, **A)])
    assert closed(m) == []


def test_a_day_record_with_the_default_scorecard_and_no_records_while_logged_out():
    m = make(AgentSettings(zones, 60.0, card=DEFAULT_SCORECARD))
    next_morning = epoch("2026-12-02T06:00:00Z")
    feed(m, shift() + [event("agent.logged_out", T0 + 4000, queues=["продажи", "billing"], **A),
                       event("agent.logged_in", next_morning, queues=["продажи"], **A)])
    records = by_period(closed(m))
    # logged out from +4000 to the next morning: the interval of the logout is the last one
    assert max(s for p, s in records if p == 15) == 3600 and max(s for p, s in records if p == 30) == 3600
    day = records[("day", epoch("2026-11-30T21:00:00Z") - T0)]  # the Moscow day starts 21:00Z
    assert (day["period"], day["business_day"], day["interval_minutes"]) == ("day", "2026-12-01", None)
    assert (day["answered"], day["handled"]) == (3, 2)
    assert day["state_seconds"]["logged_in"] == pytest.approx(4000)
    # default card: CSAT 0.5 against 0.8, FCR 0.5 against 0.85, occupancy 690 / (4000 - 1200)
    # below the band [0.75, 0.9]: scored 0.2464 / 0.75
    card = day["scorecard"]
    occupancy = 690 / 2800
    assert card["measures"]["csat_ratio"] == {"value": 0.5, "target": 0.8, "weight": 1.0, "score": pytest.approx(0.625)}
    assert card["measures"]["occupancy"]["score"] == pytest.approx(occupancy / 0.75)
    assert card["score"] == pytest.approx(100 * (0.5 / 0.8 + 0.5 / 0.85 + occupancy / 0.75) / 3)
    assert card["left_out"] == [] and card["scheduled_seconds"] is None


def test_a_configured_card_adherence_and_names():
    settings = AgentSettings(zones, 60.0, names={"a1": "Anna Petrova"}, scheduled_seconds=lambda a: 8 * 3600.0,
                             card=(Measure("average_handle_seconds", 2.0, target=300.0), Measure("handled", 1.0, target=4.0),
                                   Measure("adherence", 1.0, target=0.95), Measure("net_promoter_score", 1.0, target=30.0)))
    m = make(settings)
    feed(m, shift())
    view = m.read(T0 + 3600)
    assert view["agent_name"] == "Anna Petrova"  # the configured name wins over the events' "Анна"
    card = view["today"]["scorecard"]
    # AHT (540 + 60 + 90) / 2 = 345 > 300: 300 / 345; handled 2 of 4; adherence 3600 / 28800 of 0.95;
    # NPS 100 (one promoter) >= 30: 1
    aht, handled, adherence = 300 / 345, 2 / 4, (3600 / 28800) / 0.95
    assert card["measures"]["adherence"]["value"] == pytest.approx(0.125)
    assert card["score"] == pytest.approx(100 * (2 * aht + handled + adherence + 1.0) / 5)
    assert card["scheduled_seconds"] == 28800


def test_measure_scores_by_hand():
    assert measure_score("csat_ratio", 0.9, target=0.8) == 1.0
    assert measure_score("csat_ratio", 0.6, target=0.8) == pytest.approx(0.75)
    assert measure_score("average_handle_seconds", 240, target=300) == 1.0
    assert measure_score("average_handle_seconds", 400, target=300) == pytest.approx(0.75)
    assert measure_score("ring_no_answers", 0, target=0) == 1.0 and measure_score("ring_no_answers", 2, target=0) == 0.0
    assert measure_score("occupancy", 0.6, band=(0.75, 0.9)) == pytest.approx(0.8)
    assert measure_score("occupancy", 0.8, band=(0.75, 0.9)) == 1.0
    assert measure_score("occupancy", 0.95, band=(0.75, 0.9)) == pytest.approx(0.9 / 0.95)
    assert measure_score("net_promoter_score", -20, target=30) == pytest.approx(80 / 130)
    assert measure_score("handled", 5, target=0) == 1.0


def test_a_measure_without_a_value_is_left_out_and_the_weights_renormalized():
    card = (Measure("csat_ratio", 3.0, target=0.8), Measure("handled", 1.0, target=10.0))
    result = score_card({"csat_ratio": None, "handled": 5.0}, card)
    assert result["score"] == pytest.approx(50.0) and result["left_out"] == ["csat_ratio"]
    assert score_card({}, card)["score"] is None


def test_a_quiet_agent_gets_preliminary_records_and_then_the_final_ones():
    m = make()
    feed(m, shift()[:11])  # available from +960, then silence
    assert sorted(by_period(closed(m))) == [(15, 0)]  # the watermark (+960) minus the lateness passed +900
    # by the stream clock at +1800 + 61 the second 15-minute interval and the first 30 are due
    pending = by_period(m.pending_records(T0 + 1861))
    assert sorted(pending) == [(15, 900), (30, 0)] and not any(r["final"] for r in pending.values())
    assert pending[(15, 900)]["state_seconds"]["available"] == pytest.approx(840)
    assert m.pending_records(T0 + 1862) == []  # nothing new: not built again
    # a late event (within the lateness of the clock, after the agent's own watermark) still counts,
    # then the agent's next event closes the periods for good
    feed(m, [event("call.ring_no_answer", T0 + 1790, call_id="c9", **Q, **A),
             event("agent.state_changed", T0 + 1900, queues=["продажи"], state="not_ready", reason="break", **A)])
    final = by_period(closed(m))
    assert sorted(final) == [(15, 900), (30, 0)]
    assert final[(15, 900)]["final"] and final[(15, 900)]["ring_no_answers"] == 1
    assert final[(15, 900)] == {**pending[(15, 900)], "final": True, "ring_no_answers": 1}


def test_records_survive_a_snapshot_mid_interval_and_are_published_again():
    events = shift() + [event("call.hold_ended", T0 + 3661, call_id="c3", **Q, **A)]
    whole, split = make(), make()
    feed(whole, events)
    feed(split, events[:14])
    restored = make()
    restored.load_state(orjson.loads(orjson.dumps(split.to_state())))
    feed(restored, events[14:])
    assert closed(restored)[-3:] == closed(whole)[-3:]
    assert restored.read(T0 + 4000) == whole.read(T0 + 4000)
    # what a new owner publishes again: the records closed recently
    assert by_period(restored.final_records()) == by_period(whole.final_records())
    assert (15, 0) in by_period(restored.final_records())


def test_an_older_snapshot_without_periods_starts_them_at_its_watermark():
    m = make()
    feed(m, shift()[:6])
    state = orjson.loads(orjson.dumps(m.to_state()))
    for key in ("counted_until", "slots", "first_time", "closed_until", "final"):
        del state[key]
    old = make()
    old.load_state(state)
    feed(old, [event("call.ended", T0 + 2000, call_id="c1", **Q, **A)])
    assert old.read(T0 + 2000)["today"]["handled"] == 1


def test_the_agents_section_of_the_config(tmp_path):
    names = tmp_path / "agents.csv"
    names.write_text("agent_id,agent_name,scheduled_hours\n1001,王芳,7.5\n1002,Иван Петров,\n", encoding="utf-8")
    config = tmp_path / "c.toml"
    config.write_text(f'[agents]\ntimezone = "Asia/Shanghai"\nbusiness_day_start = "06:00"\nnames_file = "{names}"\n'
                      'scheduled_hours = 8\n[agents.names]\n"1003" = "Li Lei"\n'
                      '[agents.scorecard]\naverage_handle_seconds = { target = 300, weight = 2 }\n'
                      'occupancy = { band = [0.7, 0.85] }\n', encoding="utf-8")
    agents = load_config(config, {}).agents
    assert (agents.timezone, agents.business_day_start) == ("Asia/Shanghai", datetime.time(6, 0))
    assert agents.names == {"1001": "王芳", "1002": "Иван Петров", "1003": "Li Lei"}
    assert (agents.scheduled_seconds("1001"), agents.scheduled_seconds("1002")) == (27000.0, 28800.0)
    assert agents.scorecard == (Measure("average_handle_seconds", 2.0, target=300.0), Measure("occupancy", 1.0, band=(0.7, 0.85)))

    from callpulse.pipeline.state import QueueStates
    states = QueueStates(load_config(config, {"CALLPULSE_DATA_DIR": str(tmp_path)}))
    assert states._agent_day("billing")[:2] == ("Asia/Shanghai", datetime.time(6, 0))  # not the queue's UTC


@pytest.mark.parametrize(("text", "message"), [
    ('[agents.scorecard]\ncsat_rate = { target = 0.8 }', "agents.scorecard.csat_rate: unknown measure (did you mean csat_ratio"),
    ('[agents.scorecard]\noccupancy = { target = 0.8, band = [0.7, 0.9] }', "exactly one of target or band"),
    ('[agents.scorecard]\noccupancy = { band = [0.9, 0.7] }', "agents.scorecard.occupancy.band: must be [low, high]"),
    ('[agents.scorecard]\nhandled = { target = 5, weight = 0 }', "every weight is 0"),
    ('[agents]\nbusiness_day_start = "06:00"', "agents.business_day_start: needs agents.timezone"),
    ('[agents]\nscheduled_hours = 25', "agents.scheduled_hours: must be hours per day in [0, 24]"),
    ('[agents]\nnames_file = "/nonexistent/agents.csv"', "agents.names_file (/nonexistent/agents.csv): cannot read"),
    ('[agents.scorecard]\ncsat_ratio = { target = 80 }', "agents.scorecard.csat_ratio.target: must be a ratio in [0, 1] (0.8, not 80)"),
    ('[agents.scorecard]\noccupancy = { band = [75, 90] }', "agents.scorecard.occupancy.band: both ends must be a ratio in [0, 1]"),
    ('[agents.scorecard]\ncsat_average_score = { target = 45 }', "must be a CSAT score in [1, 5]"),
    ('[agents.scorecard]\nadherence = { target = 0.95 }', "agents.scorecard.adherence: needs a schedule"),
])
def test_agents_config_errors_name_the_key(tmp_path, text, message):
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(path, {})


def test_a_names_file_without_its_columns_is_refused(tmp_path):
    names = tmp_path / "agents.csv"
    names.write_text("id,name\n1001,Wang\n", encoding="utf-8")
    path = tmp_path / "c.toml"
    path.write_text(f'[agents]\nnames_file = "{names}"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="needs a header row with agent_id and agent_name"):
        load_config(path, {})



def test_a_shard_reads_only_the_agents_of_a_queue_when_asked():
    from callpulse.kpi.agents import AgentShard

    shard = AgentShard(AgentSettings(zones, 60.0))
    for e in shift():
        shard.apply(e, epoch(e["time"]))
    shard.apply(event("agent.logged_in", T0, agent_id="b2", queues=["support"]), T0)
    shard.apply(event("call.answered", T0 + 10, agent_id="b2", queue="vip", call_id="v1"), T0 + 10)
    assert [a["agent_id"] for a in shard.read(T0 + 3600, "billing")] == ["a1"]
    assert [a["agent_id"] for a in shard.read(T0 + 3600, "vip")] == ["b2"]  # a call in progress there
    assert len(shard.read(T0 + 3600)) == 2 and shard.read(T0 + 3600, "nowhere") == []


def test_answers_within_the_answering_queues_thresholds_by_the_acds_wait():
    thresholds = {"продажи": (10.0, 20.0), "billing": (30.0,)}
    m = make(AgentSettings(zones, 60.0, thresholds_for=lambda q: thresholds[q]))
    answers = [("c1", "продажи", 8.0), ("c2", "продажи", 15.0), ("c3", "продажи", 20.0), ("c4", "продажи", 20.5),
               ("c5", "billing", 25.0), ("c6", "billing", None)]
    for n, (call_id, queue, wait) in enumerate(answers):
        extra = {} if wait is None else {"wait_seconds": wait}
        m.apply(event("call.answered", T0 + 100 * n, queue=queue, call_id=call_id, agent_id="a1", **extra), T0 + 100 * n)
    today = m.read(T0 + 600)["today"]
    # within 10: c1; within 20: c1, c2, c3 (the edge counts, as for queues); within 30 (billing): c5
    assert today["answered_within"] == {"10": 1, "20": 3, "30": 1}
    assert (today["answered"], today["answered_wait_unknown"]) == (6, 1)
    from callpulse.tools.report import agent_csv_columns, agent_csv_row
    m.apply(event("agent.logged_in", T0 + 1000, queues=["продажи"], agent_id="a1"), T0 + 1000)
    record = next(r for r in m.closed if r["interval_minutes"] == 15)
    assert {"answered_within_10s", "answered_within_20s"} <= set(agent_csv_columns([record]))
    assert agent_csv_row(record)["answered_within_20s"] == "3"


# ---- found by review: each failed before its fix ---------------------------------------------

def test_a_weekend_logged_in_without_events_still_closes_fridays_day():
    m = make()
    fri = epoch("2026-12-04T06:00:00Z")  # Friday 09:00 in Moscow
    feed(m, [event("agent.logged_in", fri, queues=["продажи"], **A),
             event("call.answered", fri + 600, call_id="c1", **Q, **A),
             event("call.ended", fri + 900, call_id="c1", **Q, **A),
             event("agent.logged_out", epoch("2026-12-07T06:00:00Z"), queues=["продажи"], **A)])  # Monday
    days = {r["business_day"]: r for r in closed(m) if r["period"] == "day"}
    assert sorted(days) == ["2026-12-04", "2026-12-05", "2026-12-06"]
    assert days["2026-12-04"]["handled"] == 1 and days["2026-12-04"]["state_seconds"]["logged_in"] == 54000
    assert days["2026-12-05"]["state_seconds"]["logged_in"] == 86400


def test_an_earlier_event_before_the_first_close_gets_its_interval_closed():
    m = make()
    assert m.apply(event("call.ring_no_answer", T0 + 910, call_id="b", **Q, **A), T0 + 910) == "applied"
    assert m.apply(event("call.ring_no_answer", T0 + 890, call_id="a", **Q, **A), T0 + 890) == "late"
    m.apply(event("call.ring_no_answer", T0 + 2000, call_id="c", **Q, **A), T0 + 2000)
    first = by_period(closed(m))[(15, 0)]
    assert first["ring_no_answers"] == 1 and (15, T0) not in m.slots


def test_a_republished_record_is_the_one_sent_even_after_a_new_name():
    m = make()
    m.apply(event("agent.logged_in", T0, queues=["продажи"], agent_name="SIP/1001", **A), T0)
    m.apply(event("call.ring_no_answer", T0 + 1000, call_id="c", **Q, **A), T0 + 1000)
    sent = by_period(closed(m))[(15, 0)]
    m.apply(event("call.ring_no_answer", T0 + 1100, call_id="d", agent_name="Анна Петрова", **Q, **A), T0 + 1100)
    assert by_period(m.final_records())[(15, 0)] == sent and sent["agent_name"] == "SIP/1001"


def test_a_quiet_agents_preliminary_records_are_built_once_each():
    m = make()
    fri = epoch("2026-12-04T14:00:00Z")
    feed(m, [event("agent.logged_in", fri, queues=["продажи"], **A),
             event("agent.state_changed", fri + 60, queues=["продажи"], state="available", **A)])
    now = fri + 60 * 3600  # logged in, quiet, for 60 h by the stream clock
    built = [len(m.pending_records(now + k)) for k in range(4)]
    assert built[0] > 0 and built[-1] == 0 and sum(built) == 60 * 4 - 1 + 60 * 2 - 1 + 3  # each period once
    assert m.pending_records(now + 900) != [] and m.pending_records(now + 901) == []


def test_a_long_call_keeps_interval_occupancy_at_most_one():
    m = make()
    feed(m, [event("agent.logged_in", T0, queues=["продажи"], **A),
             event("agent.state_changed", T0 + 60, queues=["продажи"], state="on_call", **A),
             event("call.answered", T0 + 60, call_id="long", **Q, **A),
             event("call.ended", T0 + 2460, call_id="long", **Q, **A),
             event("agent.state_changed", T0 + 2460, queues=["продажи"], state="available", **A),
             event("agent.logged_out", T0 + 3600, queues=["продажи"], **A),
             event("agent.logged_in", T0 + 7200, queues=["продажи"], **A)])
    records = [r for r in closed(m) if r["interval_minutes"] == 15]
    assert all(r["occupancy"] is None or r["occupancy"] <= 1 for r in records)
    # 11:00: 60 s login (not ready), 840 s on the call: 840 / (900 - 60); then 900 / 900, 660 / 900, 0
    assert [round(r["occupancy"], 4) for r in records] == [1.0, 1.0, round(660 / 900, 4), 0.0]


def test_a_changed_day_start_between_snapshot_and_load_starts_the_days_again():
    m = make()
    feed(m, shift()[:6])
    state = orjson.loads(orjson.dumps(m.to_state()))
    moved = AgentSettings(lambda q: ("Europe/Moscow", datetime.time(6, 0), (15, 30)), 60.0)
    restored = AgentModel("a1", moved)
    restored.load_state(state)
    # the intervals' bounds did not move (same zone): their counts stay; the days start again
    assert restored.slots == m.slots and 0 not in restored.closed_until and restored.first_time == m.watermark
    restored.apply(event("agent.logged_out", T0 + 4000, queues=["продажи"], **A), T0 + 4000)
    restored.apply(event("agent.logged_in", T0 + 9000, queues=["продажи"], **A), T0 + 9000)
    starts = sorted(r["start_epoch"] - T0 for r in closed(restored) if r["interval_minutes"] == 15)
    assert starts[0] == 0 and len(starts) == len(set(starts))  # each interval once, the first whole


def test_an_agent_gone_for_a_week_is_closed_and_forgotten_and_its_old_events_stay_too_late():
    from callpulse.kpi.agents import FORGET_AGENT_AFTER, AgentShard

    shard = AgentShard(AgentSettings(zones, 60.0))
    for e in [event("agent.logged_in", T0, queues=["продажи"], agent_id="gone"),
              event("call.ring_no_answer", T0 + 100, call_id="c", **Q, agent_id="gone"),
              event("agent.logged_out", T0 + 200, queues=["продажи"], agent_id="gone")]:
        shard.apply(e, epoch(e["time"]))
    later = T0 + FORGET_AGENT_AFTER + 3600
    shard.apply(event("agent.logged_in", later, queues=["продажи"], agent_id="stays"), later)
    assert "gone" not in shard.agents and "stays" in shard.agents
    days = [r for r in shard.closed_intervals if r["agent_id"] == "gone" and r["period"] == "day"]
    assert len(days) == 1 and days[0]["final"] and days[0]["ring_no_answers"] == 1
    # a copy of its old event arriving now is too late, not a new agent's first count (nor a model)
    assert shard.apply(event("call.ring_no_answer", T0 + 150, call_id="c2", **Q, agent_id="gone"), T0 + 150) == "too_late"
    assert "gone" not in shard.agents
    # its last records are published again by a worker that takes the shard over
    assert {r["period"] for (agent, _, _), (_, r) in shard.final_records.items() if agent == "gone"} == {"interval", "day"}
    restored = AgentShard(AgentSettings(zones, 60.0))
    restored.load_state(orjson.loads(orjson.dumps(shard.to_state())))
    assert restored.forgotten == shard.forgotten and restored.watermark == shard.watermark


def test_a_short_caller_hash_key_is_refused_without_showing_it():
    with pytest.raises(ConfigError, match="at least 16 characters") as info:
        load_config(None, {"CALLPULSE_CALLER_HASH_KEY": "short-secret"})
    assert "short-secret" not in str(info.value)


def test_an_nps_band_is_scored_on_nps_plus_100_and_may_be_negative(tmp_path):
    assert measure_score("net_promoter_score", -50, band=(10, 40)) == pytest.approx(50 / 110)
    assert measure_score("net_promoter_score", 0, band=(-20, 40)) == 1.0
    assert measure_score("net_promoter_score", 60, band=(-20, 40)) == pytest.approx(140 / 160)
    path = tmp_path / "c.toml"
    path.write_text("[agents.scorecard]\nnet_promoter_score = { band = [-20, 40] }\n", encoding="utf-8")
    assert load_config(path, {}).agents.scorecard[0].band == (-20.0, 40.0)


def test_an_older_state_change_applied_after_the_logout_does_not_log_the_agent_in_again():
    m = make()
    feed(m, [event("agent.logged_in", T0, queues=["продажи"], **A)])
    m.apply(event("agent.logged_out", T0 + 40, queues=["продажи"], **A), T0 + 40)
    assert m.apply(event("agent.state_changed", T0 + 30, queues=["продажи"], state="available", **A), T0 + 30) == "late"
    view = m.read(T0 + 7200)
    assert view["state"] == "logged_out" and view["today"]["state_seconds"]["logged_in"] == 40


def test_a_preliminary_record_the_agents_late_events_contradict_is_replaced_by_a_final_one():
    m = make()
    m.apply(event("agent.logged_in", T0, queues=["продажи"], **A), T0)
    shown = {(r["interval_minutes"], r["start_epoch"]) for r in m.pending_records(T0 + 2 * 3600)}
    m.apply(event("agent.logged_out", T0 + 1200, queues=["продажи"], **A), T0 + 1200)  # its adapter lagged
    m.apply(event("call.ring_no_answer", T0 + 2 * 3600 + 60, call_id="x", **Q, **A), T0 + 2 * 3600 + 60)
    final = {(r["interval_minutes"], r["start_epoch"]): r for r in closed(m)}
    assert shown <= set(final)
    assert final[(15, T0 + 5400)]["state_seconds"]["logged_in"] == 0 and final[(15, T0 + 5400)]["final"]


def test_a_duplicate_moves_no_shard_clock_so_a_rebuild_matches():
    from callpulse.kpi.agents import AgentShard

    live, rebuilt = AgentShard(AgentSettings(zones, 60.0)), AgentShard(AgentSettings(zones, 60.0))
    first = event("agent.logged_in", T0, queues=[], agent_id="a0", event_id="e0")
    again = dict(first, time=event("x", T0 + 0.001)["time"])  # the same id, a millisecond later
    live.apply(first, T0)
    assert live.apply(again, T0 + 0.001) == "duplicate"
    rebuilt.apply(first, T0)  # a rebuild replays the applied events only
    assert live.to_state() == rebuilt.to_state()


def test_a_shard_builds_a_backlog_of_preliminary_records_over_several_calls():
    from callpulse.kpi.agents import PENDING_BUDGET, AgentShard

    shard = AgentShard(AgentSettings(zones, 60.0))
    for n in range(30):
        shard.apply(event("agent.logged_in", T0, queues=["продажи"], agent_id=f"q{n}"), T0)
    now = T0 + 3 * 86400  # quiet for 3 days: 30 agents x (287 + 143 + 3) periods ended a minute ago
    sizes = [len(shard.pending_interval_records(now)) for _ in range(12)]
    assert max(sizes) <= PENDING_BUDGET and sum(sizes) == 30 * (287 + 143 + 3) and sizes[-1] == 0


def test_a_late_first_event_closes_its_period_live_as_after_a_rebuild():
    """An event older than the agent's first (within the lateness) opens an earlier period: the
    live model closes it when its end passes, as one rebuilt from a snapshot taken before does
    (the cached next closing time was not in the snapshot, so only the rebuilt one did)."""
    settings = AgentSettings(lambda queue: ("UTC", datetime.time(0, 0), (15,)), lateness_seconds=20.0)
    start = epoch("2026-12-01T09:00:00Z")
    live = AgentModel("a1", settings)
    for e in (event("agent.logged_in", start + 5, agent_id="a1", queues=["q"]),
              event("agent.state_changed", start + 10, agent_id="a1", queues=["q"], state="available")):
        live.apply(e, epoch(e["time"]))
    rebuilt = AgentModel("a1", settings)
    rebuilt.load_state(orjson.loads(orjson.dumps(live.to_state())))
    later = [event("call.ring_no_answer", start - 5, agent_id="a1", queue="q", call_id="c1"),  # late, opens 08:45
             event("agent.state_changed", start + 26, agent_id="a1", queues=["q"], state="not_ready", reason="x")]
    for m in (live, rebuilt):
        for e in later:
            m.apply(e, epoch(e["time"]))
    records = closed(live)
    assert [(r["start"], r["ring_no_answers"]) for r in records] == [("2026-12-01T08:45:00+00:00", 1)]
    assert records == closed(rebuilt)
