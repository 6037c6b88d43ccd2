"""The label vocabulary the demo model is trained on.

It lives in one place because the data generator, the caption templates, the tokenizer corpus and
the bundle's label maps must agree; the runtime never imports it and reads the maps from the
bundle's manifest instead, so a model trained on another taxonomy ships its own.
"""

from __future__ import annotations

#: Instance classes. "person" is a class like any other (HOTR); "no object" is appended by the model.
OBJECTS: tuple[str, ...] = (
    "person",
    "gun",
    "knife",
    "bat",
    "phone",
    "bag",
    "bicycle",
    "car",
    "fire",
    "ball",
    "umbrella",
    "rock",
)

#: Interaction (verb) classes, multi-label per human-object pair.
ACTIONS: tuple[str, ...] = (
    "hold",
    "carry",
    "ride",
    "kick",
    "talk to",
    "aim",
    "punch",
    "hit",
    "lie near",
    "throw",
    "run from",
    "look at",
)

#: Image-level anomaly types of the paper; "normal" is all of them low.
ANOMALIES: tuple[str, ...] = ("fighting", "shooting", "abuse", "car accident", "riot", "explosion")

#: The verb each anomaly type is named by in the "Total Caption" ("The anomaly include \"shoot\"").
ANOMALY_VERBS: dict[str, str] = {
    "fighting": "fight",
    "shooting": "shoot",
    "abuse": "abuse",
    "car accident": "crash",
    "riot": "riot",
    "explosion": "explode",
}

#: Default enter thresholds per anomaly type, written into every bundle; field engineers override them.
DEFAULT_THRESHOLDS: dict[str, float] = {name: 0.5 for name in ANOMALIES}
#: Minimum triplet score (action x subject x object confidence) that post-processing keeps.
DEFAULT_HOI_SCORE = 0.1
#: Minimum instance confidence for a box to be drawn or reported.
DEFAULT_INSTANCE_SCORE = 0.5
