"""Words shared by the synthetic generator, the ComCOCO builder and the syntax tagger.

Identity words (IW) name an object's category; attribute words (AW) describe it
(colour, size, place, state). Everything else in a command is "other".
"""

# Synthetic scene objects: category -> the words a person would use for it.
SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disc", "dot"),
    "square": ("square", "box"),
    "triangle": ("triangle",),
    "star": ("star",),
    "ring": ("ring", "donut"),
    "cross": ("cross", "plus"),
    "heart": ("heart",),
    "diamond": ("diamond",),
    "hexagon": ("hexagon",),
    "moon": ("moon", "crescent"),
}

# Named colours with an sRGB anchor; the generator jitters around the anchor.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (40, 170, 60),
    "blue": (30, 70, 220),
    "yellow": (240, 220, 40),
    "orange": (245, 140, 20),
    "purple": (130, 50, 180),
    "pink": (245, 120, 190),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "brown": (120, 70, 30),
    "gray": (128, 128, 128),
    "cyan": (40, 210, 220),
}

SIZE_WORDS = ("small", "little", "tiny", "big", "large", "huge")
TEXTURE_WORDS = ("striped", "dotted", "plain", "checkered", "solid")
POSITION_WORDS = ("left", "right", "top", "bottom", "upper", "lower", "middle", "center", "leftmost", "rightmost",
                  "topmost", "bottommost")
RELATION_PHRASES = ("left of", "right of", "above", "below", "next to", "near", "under", "on top of", "beside")

# Spoken-command openings; tagged as "other".
COMMAND_OPENINGS = (
    "remove", "please remove", "erase", "please erase", "get rid of", "delete", "take away",
    "can you remove", "could you erase", "make disappear", "hide", "clear away", "wipe out", "remove for me",
)

# Mirror pairs: a horizontal flip of the image swaps these in the expression.
LEFT_RIGHT_SWAPS: dict[str, str] = {
    "left": "right", "right": "left",
    "leftmost": "rightmost", "rightmost": "leftmost",
    "lefthand": "righthand", "righthand": "lefthand",
}

# The 80 COCO categories (as written in RefCOCO+ expressions).
COCO_CATEGORIES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush",
)
