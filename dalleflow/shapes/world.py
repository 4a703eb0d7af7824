"""The constants of the shapes world: canvas, palette, shapes, held-out pairs.

The canvas side is 32 px, the smallest the world allows: an object is then
10-14 px across, still enough for a triangle, a circle and a square to differ
at the pixel level, and it keeps CPU training of the embedded models to
minutes instead of hours (cost grows with the square of the side).
"""

CANVAS_SIZE = 32

BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
}

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (255, 140, 0),
    "yellow": (240, 220, 20),
    "green": (30, 160, 40),
    "cyan": (0, 200, 220),
    "blue": (30, 60, 230),
    "purple": (140, 40, 180),
    "pink": (255, 120, 200),
}

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")

POSITIONS: tuple[str, ...] = ("left", "right", "top", "bottom")

RELATIONS: tuple[str, ...] = ("to the left of", "above")

# Colour-shape pairs never shown in training: prompts with them measure
# compositional generalisation.
HELD_OUT_PAIRS: frozenset[tuple[str, str]] = frozenset(
    {("green", "triangle"), ("blue", "circle"), ("yellow", "square"), ("pink", "circle")}
)

# Object side as a fraction of the canvas side.
MIN_OBJECT_FRACTION = 0.30
MAX_OBJECT_FRACTION = 0.45

# A single object "on the left" has its centre x below this fraction of the side
# (and symmetrically for right/top/bottom).
BAND_FRACTION = 0.35

# In a two-object scene the first object's centre is at least this fraction of
# the side left of (or above) the second's.
RELATION_GAP_FRACTION = 0.40

# Two objects may touch but overlap by at most this share of the smaller's area.
MAX_OVERLAP_FRACTION = 0.10
