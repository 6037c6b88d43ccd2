"""Explainable captions in the paper's What / Who / Where / Total form, composed from triplets.

The same composer writes the training targets of the generated data set and the corpus the
tokenizer is trained on, so every word the decoder must produce is in the vocabulary. "Where" is
derived from the boxes, never invented.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from h2a.export_tools.taxonomy import ACTIONS, ANOMALIES, ANOMALY_VERBS, OBJECTS

PEOPLE = ("man", "woman", "person")
#: Progressive verb phrase per action, with alternatives for varied phrasing.
ACTION_PHRASES: dict[str, tuple[str, ...]] = {
    "hold": ("holding",),
    "carry": ("carrying",),
    "ride": ("riding",),
    "kick": ("kicking",),
    "talk to": ("talking to", "speaking to"),
    "aim": ("aiming", "pointing"),
    "punch": ("punching", "hitting"),
    "hit": ("hitting", "beating"),
    "lie near": ("lying near", "lying next to"),
    "throw": ("throwing",),
    "run from": ("running from", "fleeing from"),
    "look at": ("looking at", "watching"),
}
HORIZONTAL = ((1 / 3, "on the left side"), (2 / 3, "in the middle"), (1.01, "on the right side"))
VERTICAL = ((1 / 3, "at the top"), (2 / 3, ""), (1.01, "at the bottom"))


@dataclass(frozen=True)
class Caption:
    what: str
    who: str
    where: str
    total: str

    def text(self) -> str:
        """The decoder's target: all four fields in one sequence, parsed back by the runtime."""
        return f"what: {self.what}. who: {self.who}. where: {self.where}. total caption: {self.total}"


def where_phrase(box: Sequence[float]) -> str:
    """Box (cx, cy, w, h) in [0, 1] -> "on the left side of the image" / "at the top left ..."."""
    cx, cy = box[0], box[1]
    horizontal = next(label for limit, label in HORIZONTAL if cx < limit)
    vertical = next(label for limit, label in VERTICAL if cy < limit)
    if vertical:
        side = horizontal.split()[-2] if "side" in horizontal else "middle"
        return f"{vertical} {side} of the image" if side != "middle" else f"{vertical} of the image"
    return f"{horizontal} of the image"


def noun(label: str, person_word: str) -> str:
    word = person_word if label == "person" else label
    return ("an " if word[0] in "aeiou" else "a ") + word


@dataclass(frozen=True)
class TripletText:
    subject: str  # object class of the subject ("person")
    object: str
    action: str
    subject_box: tuple[float, float, float, float]
    object_box: tuple[float, float, float, float]


def compose(triplets: Sequence[TripletText], anomaly: str | None, rng: random.Random) -> Caption:
    """Compose a caption from the triplets that explain the frame (the first one leads)."""
    if not triplets:
        return Caption(
            "nothing unusual is happening",
            "nobody",
            "in the whole image",
            "there is no anomaly in the image.",
        )
    people = [rng.choice(PEOPLE) for _ in triplets]
    clauses = []
    for t, person in zip(triplets, people, strict=True):
        verb = rng.choice(ACTION_PHRASES[t.action])
        other = "another person" if t.object == "person" else noun(t.object, "")
        clauses.append(f"{noun(t.subject, person)} is {verb} {other}")
    what = " and ".join(clauses[:2])
    lead = triplets[0]
    actors = [noun(lead.subject, people[0])]
    actors.append("another person" if lead.object == "person" else noun(lead.object, ""))
    who = " and ".join(actors)
    cx = (lead.subject_box[0] + lead.object_box[0]) / 2
    cy = (lead.subject_box[1] + lead.object_box[1]) / 2
    where = where_phrase((cx, cy, 0.0, 0.0))
    sentence = f"{where[0].upper()}{where[1:]}, {what}."
    total = (
        f'the anomaly include "{ANOMALY_VERBS[anomaly]}". {sentence}'
        if anomaly
        else f"no anomaly. {sentence}"
    )
    return Caption(what, who, where, total.lower())


def corpus(samples: int = 3000, seed: int = 0) -> list[str]:
    """Caption texts covering every label, action and place: the tokenizer's training corpus."""
    rng = random.Random(seed)
    texts = []
    for index in range(samples):
        count = 1 + index % 2
        triplets = []
        for _ in range(count):
            box_s = (rng.random(), rng.random(), 0.2, 0.4)
            box_o = (rng.random(), rng.random(), 0.1, 0.1)
            triplets.append(TripletText("person", rng.choice(OBJECTS), rng.choice(ACTIONS), box_s, box_o))
        anomaly = rng.choice((None, *ANOMALIES))
        texts.append(compose(triplets, anomaly, rng).text())
    texts.append(compose([], None, rng).text())
    texts.extend(f"person {action} {obj}" for action in ACTIONS for obj in OBJECTS)
    return texts
