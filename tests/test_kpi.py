"""KPI arithmetic against hand-computed cases, the ICMI worked example first."""

import pytest

from callpulse.kpi import formulas as kpi

ICMI = dict(answered=1000, answered_within=860, abandoned=60, abandoned_within=20, short_abandoned=10, flowed_out=0)
# The KPI reference quotes the ICMI example to one decimal of a percent.
ICMI_EXPECTED = {"SL-A": 86.0, "SL-B": 81.1, "SL-C": 81.9, "SL-D": 82.7, "SL-E": 83.0, "SL-F": 82.1}


@pytest.mark.parametrize("formula,expected", sorted(ICMI_EXPECTED.items()))
def test_icmi_worked_example(formula, expected):
    assert round(100 * kpi.service_level(formula, **ICMI), 1) == expected


def test_icmi_exact_fractions():
    assert kpi.service_level("SL-A", **ICMI) == 860 / 1000
    assert kpi.service_level("SL-B", **ICMI) == 860 / 1060
    assert kpi.service_level("SL-C", **ICMI) == 860 / 1050
    assert kpi.service_level("SL-D", **ICMI) == 860 / 1040
    assert kpi.service_level("SL-E", **ICMI) == 880 / 1060
    assert kpi.service_level("SL-F", **ICMI) == 870 / 1060


def test_flow_outs_count_against_only_in_sl_g():
    counts = dict(ICMI, flowed_out=40)
    assert kpi.service_level("SL-G", **counts) == 860 / 1100
    assert kpi.service_level("SL-B", **counts) == 860 / 1060  # unchanged by flow-outs


def test_undefined_is_none_not_zero():
    empty = dict(answered=0, answered_within=0, abandoned=0, abandoned_within=0, short_abandoned=0, flowed_out=0)
    for formula in kpi.FORMULA_TEXT:
        assert kpi.service_level(formula, **empty) is None
    # only short abandons: SL-C has nothing left to measure
    only_short = dict(empty, abandoned=2, abandoned_within=2, short_abandoned=2)
    assert kpi.service_level("SL-C", **only_short) is None
    assert kpi.service_level("SL-B", **only_short) == 0.0


def test_unknown_formula_is_an_error():
    with pytest.raises(ValueError, match="SL-Z"):
        kpi.service_level("SL-Z", **ICMI)


def test_aht_and_occupancy():
    assert kpi.average_handle_seconds(4, 600, 100, 100) == 200
    assert kpi.average_handle_seconds(0, 0, 0, 0) is None
    assert kpi.occupancy(140, 160) == 0.875
