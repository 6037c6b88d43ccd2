"""Drawing people and objects with OpenCV, each into the image *and* its own mask.

People are articulated stick figures: joints come from a pose (angles of limbs in a body frame
of unit height, feet at the origin), then are scaled, mirrored, rotated and placed. Objects are a
few primitives each, sized relative to the person that uses them. Every drawing call also paints
the instance's mask, so boxes are measured from what was drawn, never guessed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

Point = tuple[float, float]

#: Limb angles in degrees (0 = straight down, positive = towards the facing direction) per pose:
#: (upper arm front, forearm front, upper arm back, forearm back, thigh front, shin front,
#:  thigh back, shin back)
POSES: dict[str, tuple[float, ...]] = {
    "stand": (10, 5, -10, -5, 5, 0, -5, 0),
    "walk": (25, 40, -25, -10, 20, 0, -20, -15),
    "run": (60, 100, -50, -20, 40, -30, -35, -70),
    "raise arms": (160, 170, 200, 190, 5, 0, -5, 0),
    "aim": (90, 90, -15, 20, 10, 0, -10, 0),
    "punch": (100, 100, 20, 110, 15, 0, -15, 0),
    "kick": (30, 60, -30, -20, 80, 70, -10, 0),
    "throw": (160, 200, -30, -10, 20, 0, -20, 0),
    "hold": (40, 95, -10, -5, 5, 0, -5, 0),
    # a talker's hand at chest height, elbow by the body: it does not reach the listener
    "gesture": (15, 70, -10, -5, 5, 0, -5, 0),
    "phone": (30, 170, -10, -5, 5, 0, -5, 0),
    "swing": (130, 120, 120, 110, 15, 0, -15, 0),
    "ride": (60, 80, 50, 70, 80, 0, 70, 10),
    "lie": (10, 5, -10, -5, 5, 0, -5, 0),
}

# Body proportions in units of the figure's height.
HEAD_R, NECK_Y, HIP_Y, UPPER_ARM, FOREARM, THIGH, SHIN = 0.07, 0.80, 0.47, 0.17, 0.16, 0.24, 0.23


@dataclass
class Figure:
    """Where a drawn person's parts ended up, for placing the objects it interacts with."""

    head: Point
    hand_front: Point
    hand_back: Point
    foot_front: Point
    height: float
    facing: int  # +1 faces right, -1 left


def pose_joints(pose: str) -> dict[str, Point]:
    """Joints in a body frame: x to the facing side, y up, feet near y = 0, height 1."""
    af, ff, ab, fb, tf, sf, tb, sb = POSES[pose]
    neck, hip = (0.0, NECK_Y), (0.0, HIP_Y)

    def down(start: Point, angle: float, length: float) -> Point:  # angle from "straight down"
        a = math.radians(angle)
        return (start[0] + math.sin(a) * length, start[1] - math.cos(a) * length)

    elbow_f = down(neck, af, UPPER_ARM)
    elbow_b = down(neck, ab, UPPER_ARM)
    knee_f = down(hip, tf, THIGH)
    knee_b = down(hip, tb, THIGH)
    return {
        "head": (0.0, NECK_Y + HEAD_R * 1.3),
        "neck": neck,
        "hip": hip,
        "elbow_f": elbow_f,
        "hand_f": down(elbow_f, ff, FOREARM),
        "elbow_b": elbow_b,
        "hand_b": down(elbow_b, fb, FOREARM),
        "knee_f": knee_f,
        "foot_f": down(knee_f, sf, SHIN),
        "knee_b": knee_b,
        "foot_b": down(knee_b, sb, SHIN),
    }


BONES = (
    ("neck", "hip"),
    ("neck", "elbow_f"),
    ("elbow_f", "hand_f"),
    ("neck", "elbow_b"),
    ("elbow_b", "hand_b"),
    ("hip", "knee_f"),
    ("knee_f", "foot_f"),
    ("hip", "knee_b"),
    ("knee_b", "foot_b"),
)


def draw_person(
    img: np.ndarray,
    mask: np.ndarray,
    foot: Point,
    height: float,
    pose: str,
    facing: int,
    colors: tuple[tuple[int, int, int], tuple[int, int, int], tuple[int, int, int]],
    lying: bool = False,
) -> Figure:
    """Draw a person standing on `foot` (or lying with its feet there); returns its part positions."""
    joints = pose_joints(pose)
    if lying:  # rotate the body frame so the figure lies along the ground, head to the facing side
        joints = {k: (y, x) for k, (x, y) in joints.items()}

    def place(p: Point) -> tuple[int, int]:
        return (round(foot[0] + facing * p[0] * height), round(foot[1] - p[1] * height))

    pts = {k: place(p) for k, p in joints.items()}
    shirt, trousers, skin = colors
    thick = max(2, int(height / 11))
    for a, b in BONES:
        color = trousers if a in ("hip", "knee_f", "knee_b") else shirt
        width = thick + 2 if (a, b) == ("neck", "hip") else thick
        for canvas, c in ((img, color), (mask, 255)):
            cv2.line(canvas, pts[a], pts[b], c, width, cv2.LINE_AA if canvas is img else cv2.LINE_8)
    radius = max(2, int(HEAD_R * height))
    cv2.circle(img, pts["head"], radius, skin, -1, cv2.LINE_AA)
    cv2.circle(mask, pts["head"], radius, 255, -1)
    for hand in ("hand_f", "hand_b"):
        cv2.circle(img, pts[hand], max(1, thick // 2 + 1), skin, -1)
        cv2.circle(mask, pts[hand], max(1, thick // 2 + 1), 255, -1)
    as_f = {k: (float(v[0]), float(v[1])) for k, v in pts.items()}
    return Figure(as_f["head"], as_f["hand_f"], as_f["hand_b"], as_f["foot_f"], height, facing)


def _poly(img: np.ndarray, mask: np.ndarray, pts: list[Point], color: tuple[int, int, int]) -> None:
    arr = np.asarray(pts, np.float32).round().astype(np.int32)
    cv2.fillPoly(img, [arr], color, cv2.LINE_AA)
    cv2.fillPoly(mask, [arr], 255)


def _line(img: np.ndarray, mask: np.ndarray, a: Point, b: Point, color: tuple[int, int, int], w: int) -> None:
    pa, pb = (round(a[0]), round(a[1])), (round(b[0]), round(b[1]))
    cv2.line(img, pa, pb, color, max(1, w), cv2.LINE_AA)
    cv2.line(mask, pa, pb, 255, max(1, w))


def _circle(
    img: np.ndarray, mask: np.ndarray, c: Point, r: float, color: tuple[int, int, int], w: int = -1
) -> None:
    pc = (round(c[0]), round(c[1]))
    cv2.circle(img, pc, max(1, int(r)), color, w, cv2.LINE_AA)
    cv2.circle(mask, pc, max(1, int(r)), 255, w)


def draw_object(
    img: np.ndarray,
    mask: np.ndarray,
    label: str,
    at: Point,
    size: float,
    facing: int,
    rng: np.random.Generator,
    angle: float = 0.0,
) -> None:
    """Draw object `label` anchored at `at` (its grip point or centre) with a characteristic size."""
    x, y, s, f = at[0], at[1], size, facing
    rot = math.radians(angle)

    def r(dx: float, dy: float) -> Point:  # rotate an offset around the anchor, mirrored by facing
        return (
            x + f * (dx * math.cos(rot) - dy * math.sin(rot)),
            y + dx * math.sin(rot) + dy * math.cos(rot),
        )

    if label == "gun":
        _poly(
            img,
            mask,
            [r(0, -0.08 * s), r(0.55 * s, -0.08 * s), r(0.55 * s, 0.02 * s), r(0, 0.02 * s)],
            (25, 25, 30),
        )
        _poly(
            img, mask, [r(0, 0), r(0.12 * s, 0), r(0.08 * s, 0.25 * s), r(-0.04 * s, 0.25 * s)], (40, 35, 30)
        )
    elif label == "knife":
        _poly(img, mask, [r(0, -0.04 * s), r(0.5 * s, 0), r(0, 0.05 * s)], (200, 200, 210))
        _line(img, mask, r(-0.2 * s, 0), r(0, 0), (20, 20, 60), int(0.08 * s))
    elif label == "bat":
        _line(img, mask, r(0, 0), r(0.9 * s, -0.1 * s), (40, 90, 150), int(0.09 * s) + 1)
        _circle(img, mask, r(0.9 * s, -0.1 * s), 0.06 * s, (40, 90, 150))
    elif label == "phone":
        _poly(
            img,
            mask,
            [r(-0.06 * s, -0.12 * s), r(0.06 * s, -0.12 * s), r(0.06 * s, 0.12 * s), r(-0.06 * s, 0.12 * s)],
            (15, 15, 15),
        )
    elif label == "bag":
        c3 = rng.integers(40, 200, 3)
        color = (int(c3[0]), int(c3[1]), int(c3[2]))
        _poly(
            img,
            mask,
            [r(-0.2 * s, 0.1 * s), r(0.2 * s, 0.1 * s), r(0.22 * s, 0.5 * s), r(-0.22 * s, 0.5 * s)],
            color,
        )
        _line(img, mask, r(-0.1 * s, 0.1 * s), r(0, 0), color, max(1, int(0.04 * s)))
        _line(img, mask, r(0.1 * s, 0.1 * s), r(0, 0), color, max(1, int(0.04 * s)))
    elif label == "bicycle":
        wr = 0.28 * s
        back, front = (x - f * 0.45 * s, y), (x + f * 0.45 * s, y)
        for c in (back, front):
            _circle(img, mask, c, wr, (30, 30, 30), max(1, int(0.05 * s)))
        seat, bar = (x - f * 0.1 * s, y - 0.45 * s), (x + f * 0.35 * s, y - 0.5 * s)
        for a, b in (
            (back, seat),
            (seat, (x, y)),
            ((x, y), front),
            (seat, bar),
            (bar, front),
            (back, (x, y)),
        ):
            _line(img, mask, a, b, (30, 30, 200), max(1, int(0.05 * s)))
    elif label == "car":
        body = (int(rng.integers(30, 220)), int(rng.integers(30, 220)), int(rng.integers(30, 220)))
        w, h = 1.6 * s, 0.45 * s
        _poly(img, mask, [r(-w / 2, -h), r(w / 2, -h), r(w / 2, 0), r(-w / 2, 0)], body)
        _poly(img, mask, [r(-w / 4, -h), r(w / 5, -h), r(w / 8, -1.6 * h), r(-w / 6, -1.6 * h)], body)
        _poly(
            img,
            mask,
            [r(-w / 5, -1.05 * h), r(w / 7, -1.05 * h), r(w / 11, -1.5 * h), r(-w / 8, -1.5 * h)],
            (200, 190, 150),
        )
        for dx in (-w / 3, w / 3):
            _circle(img, mask, r(dx, 0), 0.14 * s, (20, 20, 20))
    elif label == "fire":
        for k in range(7):
            cx, cy = x + rng.normal(0, 0.18 * s), y - abs(rng.normal(0.2 * s, 0.15 * s))
            tongue = [(cx - 0.15 * s, y), (cx, cy - 0.35 * s), (cx + 0.15 * s, y)]
            _poly(img, mask, tongue, (0, 60 + 25 * k, 255))  # BGR: red -> orange -> yellow
        _circle(img, mask, (x, y - 0.1 * s), 0.16 * s, (60, 220, 255))
    elif label == "ball":
        _circle(img, mask, (x, y), 0.13 * s, (240, 240, 240))
        cv2.circle(img, (int(x), int(y)), max(1, int(0.05 * s)), (20, 20, 20), -1)
    elif label == "umbrella":
        top = (x, y - 0.55 * s)
        cv2.ellipse(
            img, (int(top[0]), int(top[1])), (int(0.45 * s), int(0.3 * s)), 0, 180, 360, (150, 40, 120), -1
        )
        cv2.ellipse(mask, (int(top[0]), int(top[1])), (int(0.45 * s), int(0.3 * s)), 0, 180, 360, 255, -1)
        _line(img, mask, (x, y), top, (30, 30, 30), max(1, int(0.04 * s)))
    elif label == "rock":
        pts = [
            (
                x + 0.1 * s * math.cos(t) * rng.uniform(0.7, 1.2),
                y + 0.1 * s * math.sin(t) * rng.uniform(0.7, 1.2),
            )
            for t in np.linspace(0, 2 * math.pi, 7)[:-1]
        ]
        _poly(img, mask, pts, (90, 100, 110))
    else:
        raise ValueError(f"no drawing for object {label!r}")
