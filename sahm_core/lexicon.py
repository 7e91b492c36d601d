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

# Sentence frames around the noun phrase ("{}"), as the node hands them to the model: lower case, no punctuation,
# no "uh"/"um" (ros_ror.commands.normalise drops those). Every word of a frame is tagged "other". The one list the
# synthetic generator and the tagger's corpus sample; sahm_core.data.heldout keeps its own, disjoint list for testing.
COMMAND_FRAMES = tuple(f"{opening} {{}}" for opening in COMMAND_OPENINGS) + (
    # indirect requests
    "could you remove {}", "could you please remove {}", "can you please erase {}", "can you delete {}",
    "will you remove {}", "would you please erase {}", "i want you to remove {}", "i'd like you to erase {}",
    "i would like you to remove {}", "i need {} removed", "i'd like {} erased", "go ahead and delete {}",
    # addressed to the robot
    "hey robot remove {}", "hey robot can you erase {}", "ok robot get rid of {}", "okay robot delete {}",
    "hey can you remove {}", "robot remove {}", "robot please erase {}", "hi robot please take away {}",
    # out of here / out of sight
    "can you get {} out of here", "get {} out of here", "take {} out of the picture", "get {} out of the picture",
    "take {} away", "get {} out of the way", "could you take {} away please",
    # what the speaker does not want
    "i don't want to see {}", "i don't want {} in the picture", "i do not want to see {}", "i don't like {}",
    "i don't want {} there",
    # make it go
    "make {} go away", "make {} disappear", "make {} vanish", "please make {} go away",
    # politeness before and after
    "please remove {} thanks", "remove {} please", "erase {} thank you", "delete {} for me please",
    "please get rid of {} thanks", "remove {} thanks a lot", "could you erase {} please", "get rid of {} please",
    "please take away {} thank you", "hide {} please", "{} please",
    # the object first, or command words after it
    "{} has to go", "{} needs to go", "{} remove that", "{} take it away", "{} delete it please",
    "{} i don't want it", "{} is in the way remove it", "{} is ugly erase it",
    # where it should go, after the object
    "take {} off the table", "get {} out of my sight", "erase {} from the photo", "remove {} from the frame",
    "get {} off the picture", "delete {} from this image please", "wipe {} off the image",
    # casual and chatty
    "ok just remove {}", "yeah erase {}", "hey could you hide {} for a second", "please hide {} for now thanks",
    "robot i think you should remove {}", "i hate {} please erase it", "maybe get rid of {}",
    "honestly just delete {}", "i'm tired of seeing {}", "we don't need {} remove it",
    # long preambles: the object's words come late in the sentence (ModelConfig.text_len counts tokens)
    "hey robot i was wondering if you could please remove {}",
    "okay so there is something in this picture that i do not like can you remove {}",
    "when you get a chance i would like you to erase {}",
    "this picture would look a lot better if you could delete {}",
    "hey robot listen carefully and remove {}",
    "alright robot here is what i need you to do get rid of {}",
    "so what i would really like you to do for me right now is remove {}",
)

# Words a speaker puts in that the node keeps (unlike "uh"/"um"); the speech augmentation inserts them, tagged "other".
SPOKEN_DISCOURSE = ("like", "you know", "well", "maybe", "just", "really", "i think", "probably", "totally")

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
