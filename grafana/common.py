"""House style for callpulse dashboards, on top of grafana-foundation-sdk.

Every panel is made by one of the factories below, which take the four things a panel must have:
a title, a description (the formula in words: which metric, which window, which definition), a
unit and its queries. Every panel and every query uses the ``${datasource}`` variable; every
dashboard has the ``datasource`` and ``queue`` variables. Rates and increases are written with
``$__rate_interval`` (tests/test_grafana.py checks all of this on the generated JSON).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from grafana_foundation_sdk.builders import bargauge, heatmap, stat, timeseries
from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import heatmap as hm
from grafana_foundation_sdk.models import prometheus as pm

DATASOURCE_UID = "callpulse-prometheus"  # fixed in grafana/provisioning/datasources/prometheus.yml
DATASOURCE_NAME = "Prometheus"
DS = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
TAG = "callpulse"
WINDOWS = ("5m", "15m", "30m", "1h", "today")  # the worker's exact windows (window label values)
QUEUE = 'queue=~"$queue"'  # multi-value variable: always a regex match

Query = prom.Dataquery


# --- variables ------------------------------------------------------------------------------------

def datasource_variable() -> db.DatasourceVariable:
    return (
        db.DatasourceVariable("datasource")
        .label("Data source")
        .type("prometheus")
        .current(dm.VariableOption(selected=True, text=DATASOURCE_NAME, value=DATASOURCE_UID))
    )


def queue_variable() -> db.QueryVariable:
    return (
        db.QueryVariable("queue")
        .label("Queue")
        .description("Queue ids as exported in callcenter_queue_info{queue}")
        .datasource(DS)
        .query("label_values(callcenter_queue_info, queue)")
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .current(dm.VariableOption(selected=True, text=["All"], value=["$__all"]))
    )


def window_variable(default: str = "15m") -> db.CustomVariable:
    return (
        db.CustomVariable("window")
        .label("Window")
        .description("Rolling window computed exactly by the worker (window label): 5m, 15m, 30m, 1h, "
                     "or today (since the queue's business-day start in its own time zone)")
        .values(",".join(WINDOWS))
        .current(dm.VariableOption(selected=True, text=default, value=default))
    )


# --- queries --------------------------------------------------------------------------------------

def query(expr: str, legend: str = "", *, ref: str = "A", instant: bool = False,
          fmt: pm.PromQueryFormat | None = None) -> Query:
    q = Query().expr(expr).ref_id(ref).datasource(DS)
    q = q.instant() if instant else q.range()
    if legend:
        q = q.legend_format(legend)
    if fmt is not None:
        q = q.format(fmt)
    return q


def _common(panel, title: str, description: str, unit: str, queries: Sequence[Query], height: int, width: int):
    panel = panel.title(title).description(description).unit(unit).datasource(DS).height(height).span(width)
    for q in queries:
        panel = panel.with_target(q)
    return panel


# --- wallboard tiles ------------------------------------------------------------------------------

def steps(*pairs: tuple[float | None, str]) -> db.ThresholdsConfig:
    return db.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(
        [dm.Threshold(value=v, color=c) for v, c in pairs])


def tile(title: str, description: str, unit: str, expr: str, *, width: int, height: int,
         thresholds: db.ThresholdsConfig | None = None, color: str | None = None,
         legend: str = "", decimals: int | None = None) -> stat.Panel:
    """A big single number for the TV: instant query, value only, no sparkline, background colour."""
    p = _common(stat.Panel(), title, description, unit, [query(expr, legend, instant=True)], height, width)
    p = (p.graph_mode(cm.BigValueGraphMode.NONE)
         .color_mode(cm.BigValueColorMode.BACKGROUND)
         .text_mode(cm.BigValueTextMode.VALUE)
         .justify_mode(cm.BigValueJustifyMode.CENTER)
         .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
         .no_value("–"))
    if decimals is not None:
        p = p.decimals(decimals)
    if color is not None:
        p = p.color_scheme(db.FieldColor().mode(dm.FieldColorModeId.FIXED).fixed_color(color))
    else:
        p = p.color_scheme(db.FieldColor().mode(dm.FieldColorModeId.THRESHOLDS))
        p = p.thresholds(thresholds or steps((None, "blue")))
    return p


def tile_against(title: str, description: str, unit: str, expr: str, reference: str, *, fallback: float,
                 higher_is_better: bool, width: int, height: int, decimals: int | None = None) -> stat.Panel:
    """A tile coloured against a per-queue reference series (target or alert limit).

    Query B (``reference``) is turned into the field's ``max`` by the "Config from query results"
    transformation, and the thresholds are in *percentage* mode (percent of min..max, min = 0), so
    100 % means "at the reference". Higher is better (service level): red below 90 % of the
    target, orange from 90 %, green from 100 %. Lower is better (limits): green below 50 % of the
    limit, orange from 50 %, red from 100 %. Without a reference sample (limit turned off, or no
    SL sample at all) ``max`` stays at ``fallback``.
    """
    if higher_is_better:
        pct = [(None, "red"), (90.0, "orange"), (100.0, "green")]
    else:
        pct = [(None, "green"), (50.0, "orange"), (100.0, "red")]
    p = tile(title, description, unit, expr, width=width, height=height, decimals=decimals,
             thresholds=db.ThresholdsConfig().mode(dm.ThresholdsMode.PERCENTAGE).steps(
                 [dm.Threshold(value=v, color=c) for v, c in pct]))
    return (p.with_target(query(reference, "reference", ref="B", instant=True))
            .min(0).max(fallback)
            .with_transformation(dm.DataTransformerConfig(id_val="configFromData", options={
                "configRefId": "B",
                "applyTo": {"id": "byFrameRefID", "options": "A"},
                "mappings": [{"fieldName": "reference", "handlerKey": "max", "reducerId": "lastNotNull"}],
            })))


def tag(expr: str, kind: str) -> str:
    """``expr`` with the constant label ``kind="<kind>"`` added (label_replace of the empty source label)."""
    return f'label_replace({expr}, "kind", "{kind}", "", "")'


def tiles_against(title: str, description: str, unit: str, expr: str, reference: str, *, key: str,
                  name_label: str, name_pattern: str, fallback: float, higher_is_better: bool, width: int,
                  height: int, decimals: int | None = None, numeric_key: bool = True,
                  percent_steps: Sequence[tuple[float | None, str]] | None = None) -> stat.Panel:
    """One stat panel showing one value per series of ``expr`` (e.g. one per configured threshold),
    each coloured against ITS OWN reference series (e.g. that threshold's target).

    Both expressions must return at most one series per value of the label ``key`` and carry the
    label ``name_label`` (the name shown under each value, matched by the regular expression
    ``name_pattern``). How Grafana pairs them, with standard transformations only:

    1. Join by labels (value label ``kind``, join on ``key`` and ``name_label``): one row per key,
       columns ``value`` (from ``expr``, tagged kind="value") and ``reference`` (kind="reference").
       The reference query comes first, so a key whose value is missing (no calls) keeps its row.
    2. Convert ``key`` to a number and sort by it: the values stay in numeric order (5, 10, 120)
       whatever order the data arrives in. With ``numeric_key=False`` (e.g. ``key="queue"``) the
       rows are sorted by the text of ``key`` and nothing is converted.
    3. Rows to fields: each row becomes a field named by ``name_label`` whose value is ``value``
       and whose ``max`` is ``reference``. The thresholds are in percentage mode of min..max with
       min = 0, exactly as in ``tile_against``: 100 % means "at the reference", decided on the
       exact value, not on the rounded text. A row without a value shows ``no_value``.
    4. Filter by name (``name_pattern``): only those fields are shown. If no key has a value at
       all, step 3 has nothing to turn into fields and the panel shows ``no_value`` instead of
       the references.

    ``percent_steps`` replaces the default colour steps (percent of the reference, as above).

    Row repeats cannot do this: a dashboard variable (e.g. ``threshold``) is evaluated once for
    all selected queues, not per repeated row, so every queue's row would get the union of all
    queues' thresholds.
    """
    if percent_steps is not None:
        pct = list(percent_steps)
    elif higher_is_better:
        pct = [(None, "red"), (90.0, "orange"), (100.0, "green")]
    else:
        pct = [(None, "green"), (50.0, "orange"), (100.0, "red")]
    queries = [query(tag(reference, "reference"), "reference", ref="A", instant=True),
               query(tag(expr, "value"), "value", ref="B", instant=True)]
    p = _common(stat.Panel(), title, description, unit, queries, height, width)
    p = (p.graph_mode(cm.BigValueGraphMode.NONE)
         .color_mode(cm.BigValueColorMode.BACKGROUND)
         .text_mode(cm.BigValueTextMode.VALUE_AND_NAME)
         .justify_mode(cm.BigValueJustifyMode.CENTER)
         .orientation(cm.VizOrientation.AUTO)
         .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
         .no_value("–")
         .color_scheme(db.FieldColor().mode(dm.FieldColorModeId.THRESHOLDS))
         .thresholds(db.ThresholdsConfig().mode(dm.ThresholdsMode.PERCENTAGE).steps(
             [dm.Threshold(value=v, color=c) for v, c in pct]))
         .min(0).max(fallback))
    if decimals is not None:
        p = p.decimals(decimals)
    convert = [("convertFieldType", {"conversions": [{"targetField": key, "destinationType": "number"}],
                                     "fields": {}})] if numeric_key else []
    for id_val, options in (
        ("joinByLabels", {"value": "kind", "join": [key, name_label]}),
        *convert,
        ("sortBy", {"sort": [{"field": key, "desc": False}], "fields": {}}),
        ("rowsToFields", {"mappings": [
            {"fieldName": name_label, "handlerKey": "field.name"},
            {"fieldName": "value", "handlerKey": "field.value"},
            {"fieldName": "reference", "handlerKey": "max", "reducerId": "lastNotNull"},
            {"fieldName": key, "handlerKey": "__ignore"},
        ]}),
        ("filterFieldsByName", {"include": {"pattern": name_pattern}}),
    ):
        p = p.with_transformation(dm.DataTransformerConfig(id_val=id_val, options=options))
    return p


def label_tile(expr: str, *, width: int, height: int, link: str) -> stat.Panel:
    """The queue's display label (callcenter_queue_info{label}) as the first tile of a row."""
    p = _common(stat.Panel(), "Queue", "Display label of the queue from its configuration "
                "(callcenter_queue_info{label}); click it for the queue detail dashboard.", "none",
                [query(expr, "{{label}}", instant=True)], height, width)
    return (p.graph_mode(cm.BigValueGraphMode.NONE)
            .color_mode(cm.BigValueColorMode.NONE)
            .text_mode(cm.BigValueTextMode.NAME)
            .justify_mode(cm.BigValueJustifyMode.CENTER)
            .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
            .data_links([db.DashboardLink("Queue detail").url(link)]))


# --- graphs ---------------------------------------------------------------------------------------

def graph(title: str, description: str, unit: str, *queries: Query, width: int = 12, height: int = 8,
          stack: bool = False, bars: bool = False, lines_at: Iterable[tuple[float, str]] = (),
          dashed_refs: Iterable[str] = (), min_val: float | None = None, max_val: float | None = None,
          repeat: str | None = None) -> timeseries.Panel:
    """A time series. ``lines_at`` draws fixed dashed threshold lines; ``dashed_refs`` draws the
    series of those queries (targets, limits) as dashed lines."""
    p = _common(timeseries.Panel(), title, description, unit, queries, height, width)
    p = (p.legend(cb.VizLegendOptions().display_mode(cm.LegendDisplayMode.LIST)
                  .placement(cm.LegendPlacement.BOTTOM).show_legend(True))
         .tooltip(cb.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.DESCENDING))
         .fill_opacity(60 if bars or stack else 10)
         .line_width(1 if bars else 2))
    if bars:
        p = p.draw_style(cm.GraphDrawStyle.BARS)
    if stack:
        p = p.stacking(cb.StackingConfig().mode(cm.StackingMode.NORMAL))
    lines = list(lines_at)
    if lines:
        p = (p.thresholds(steps((None, "transparent"), *lines))
             .thresholds_style(cb.GraphThresholdsStyleConfig().mode(cm.GraphThresholdsStyleMode.DASHED)))
    for ref in dashed_refs:
        p = p.override_by_query(ref, [
            dm.DynamicConfigValue(id_val="custom.lineStyle", value={"dash": [10, 10], "fill": "dash"}),
            dm.DynamicConfigValue(id_val="custom.fillOpacity", value=0),
        ])
    if min_val is not None:
        p = p.min(min_val)
    if max_val is not None:
        p = p.max(max_val)
    if repeat:
        p = p.repeat(repeat).repeat_direction("h").max_per_row(2)
    return p


def bars_now(title: str, description: str, unit: str, *queries: Query, width: int = 12, height: int = 8,
             max_val: float | None = None, thresholds: db.ThresholdsConfig | None = None) -> bargauge.Panel:
    """Horizontal bars of the latest values (instant queries), one bar per series."""
    p = _common(bargauge.Panel(), title, description, unit, queries, height, width)
    p = (p.orientation(cm.VizOrientation.HORIZONTAL)
         .display_mode(cm.BarGaugeDisplayMode.BASIC)
         .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
         .min(0)
         .thresholds(thresholds or steps((None, "blue"))))
    if max_val is not None:
        p = p.max(max_val)
    return p


def wait_heatmap(title: str, description: str, expr: str, *, width: int = 12, height: int = 8) -> heatmap.Panel:
    """Histogram buckets (``le``) as a heatmap: one column per step, one row per bucket."""
    q = query(expr, "{{le}}", fmt=pm.PromQueryFormat.HEATMAP)
    p = _common(heatmap.Panel(), title, description, "short", [q], height, width)
    return (p.calculate(False)
            .y_axis(heatmap.YAxisConfig().unit("s").axis_placement(cm.AxisPlacement.LEFT))
            .rows_frame(heatmap.RowsHeatmapOptions().layout(cm.HeatmapCellLayout.LE).value("calls"))
            .cell_values(heatmap.CellValues().unit("short"))
            .color(heatmap.HeatmapColorOptions().mode(hm.HeatmapColorMode.SCHEME).scheme("Oranges")
                   .scale(hm.HeatmapColorScale.EXPONENTIAL).exponent(0.5).steps(64).fill("dark-orange"))
            .show_value(cm.VisibilityMode.AUTO))


# --- dashboards -----------------------------------------------------------------------------------

def new_dashboard(uid: str, title: str, description: str, *, refresh: str, time_from: str,
                  window: bool) -> db.Dashboard:
    d = (db.Dashboard(title).uid(uid).description(description).tags([TAG])
         .refresh(refresh).time(time_from, "now").timezone("browser").readonly()
         .tooltip(dm.DashboardCursorSync.CROSSHAIR)
         .annotation(db.AnnotationQuery().name("Annotations & Alerts").built_in(1).type("dashboard")
                     .datasource(dm.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
                     .enable(True).hide(True).icon_color("rgba(0, 211, 255, 1)"))
         .timepicker(db.TimePicker().refresh_intervals(["5s", "10s", "30s", "1m", "5m"]))
         .link(db.DashboardLink("callpulse").type(dm.DashboardLinkType.DASHBOARDS).tags([TAG])
               .as_dropdown(True).include_vars(True).keep_time(True))
         .with_variable(datasource_variable())
         .with_variable(queue_variable()))
    if window:
        d = d.with_variable(window_variable())
    return d


def to_json(dashboard: db.Dashboard) -> dict:
    """The dashboard as plain JSON data, with panel ids numbered 1, 2, ... in layout order."""
    data = json.loads(json.dumps(dashboard.build(), cls=JSONEncoder))
    next_id = 1
    for panel in data.get("panels", []):
        for p in [panel, *panel.get("panels", [])]:
            p["id"] = next_id
            next_id += 1
    data["version"] = 1
    return data


def dumps(data: dict) -> str:
    """Sorted, indented, UTF-8 text: the committed form (diffs read well, output is deterministic)."""
    return json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
