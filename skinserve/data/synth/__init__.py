"""A procedurally drawn stand-in for the Shine selfie set, written in its folder layout and sidecar schema.

`face` draws the head and its features, `conditions` paints the seven conditions onto it, `writer` lays out the set.
"""

from skinserve.data.synth.conditions import draw_face
from skinserve.data.synth.face import AGE_GROUPS, GENDERS, SKIN_TONES, FaceGeometry, FaceSpec, face_geometry
from skinserve.data.synth.writer import GENERATOR, SynthConfig, SynthSummary, write_synthetic_set

__all__ = [
    "AGE_GROUPS",
    "GENDERS",
    "GENERATOR",
    "SKIN_TONES",
    "FaceGeometry",
    "FaceSpec",
    "SynthConfig",
    "SynthSummary",
    "draw_face",
    "face_geometry",
    "write_synthetic_set",
]
