"""Zones and arming schedules decide whether a (synthetic) event raises an alert."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from h2a.edge.arming import decide
from h2a.edge.config import ConfigError, EdgeConfig, parse_config

TYPES = ["fighting", "riot"]
FRAME = (100, 100)
LEFT = [
    (np.array([10, 40, 20, 60], np.float32), np.array([0, 0, 5, 5], np.float32))
]  # subject centre (15, 50)
RIGHT = [(np.array([80, 40, 90, 60], np.float32), np.array([0, 0, 5, 5], np.float32))]
ZONES = """
[[zone]]
name = "left"
points = [[0, 0], [0.5, 0], [0.5, 1], [0, 1]]
types = ["fighting"]
enter = 0.6
min_duration = 1.0

[[zone]]
name = "right"
points = [[0.5, 0], [1, 0], [1, 1], [0.5, 1]]
types = []
"""


def config(text: str) -> EdgeConfig:
    return parse_config(text, TYPES, {}, "v")


def test_a_zone_arms_only_its_types_with_its_own_thresholds() -> None:
    c = config(ZONES)
    assert decide(c, "fighting", 0.7, 2.0, LEFT, FRAME, None).armed
    assert decide(c, "fighting", 0.7, 2.0, LEFT, FRAME, None).zones == ["left"]
    assert (
        decide(c, "fighting", 0.55, 2.0, LEFT, FRAME, None).reason == "outside every zone that arms it"
    )  # enter
    assert not decide(c, "fighting", 0.7, 0.5, LEFT, FRAME, None).armed  # not yet lasted 1 s
    assert not decide(c, "riot", 0.9, 5.0, LEFT, FRAME, None).armed  # left arms fighting only
    right = decide(c, "fighting", 0.9, 5.0, RIGHT, FRAME, None)
    assert not right.armed and right.zones == ["right"]  # right only labels
    assert not decide(c, "fighting", 0.9, 5.0, [], FRAME, None).armed  # nobody placed
    assert decide(config(""), "riot", 0.9, 0.0, [], FRAME, None).armed  # no zones: everywhere


def test_a_schedule_arms_by_day_and_time_including_spans_past_midnight() -> None:
    c = config('[[schedule]]\ndays = ["fri"]\nfrom = "22:00"\nto = "06:00"\ntypes = ["riot"]\n')
    friday_night = dt.datetime(2026, 11, 20, 23, 30)  # a Friday
    saturday_early = dt.datetime(2026, 11, 21, 5, 59)
    saturday_morning = dt.datetime(2026, 11, 21, 6, 0)
    assert decide(c, "riot", 0.9, 1.0, [], FRAME, friday_night).armed
    assert decide(c, "riot", 0.9, 1.0, [], FRAME, saturday_early).armed  # Friday's night goes on
    assert decide(c, "riot", 0.9, 1.0, [], FRAME, saturday_morning).reason == "disarmed by schedule"
    assert not decide(c, "fighting", 0.9, 1.0, [], FRAME, friday_night).armed  # not a scheduled type
    assert decide(c, "fighting", 0.9, 1.0, [], FRAME, None).armed  # no clock (sweeps): schedules not applied


def test_a_schedule_may_arm_only_some_zones() -> None:
    c = config(
        ZONES.replace("types = []", 'types = ["fighting"]')
        + '[[schedule]]\nfrom = "00:00"\nto = "12:00"\nzones = ["right"]\n'
    )
    morning = dt.datetime(2026, 11, 20, 9, 0)
    assert not decide(c, "fighting", 0.9, 5.0, LEFT, FRAME, morning).armed
    assert decide(c, "fighting", 0.9, 5.0, RIGHT, FRAME, morning).armed


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (
            '[[zone]]\npoints = [[0, 0], [1, 0], [1, 1]]\ntypes = ["robbery"]',
            "'zone[0].types' names anomaly type 'robbery'",
        ),
        ("[[zone]]\npoints = [[0, 0], [1, 0], [1, 1]]\nenter = 1.5", "'zone[0].enter' must be in [0, 1]"),
        ('[[schedule]]\nfrom = "25:00"\nto = "06:00"', "'schedule[0].from' must be a time of day"),
        ('[[schedule]]\nfrom = "20:00"', "'schedule[0].to' is missing"),
        (
            '[[schedule]]\nfrom = "20:00"\nto = "21:00"\ndays = ["funday"]',
            "'schedule[0].days' names day 'funday'",
        ),
        (
            '[[schedule]]\nfrom = "20:00"\nto = "21:00"\nzones = ["nowhere"]',
            "'schedule[0].zones' names zone 'nowhere'",
        ),
    ],
)
def test_zone_and_schedule_errors_name_the_key(text: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        config(text)
    assert key in str(err.value)
