"""`sahm make-data`: write a removal dataset (synthetic scenes, ComCOCO from a local COCO + RefCOCO+, or pairs
extracted from a robot's rosbags: `from-bag`), multiply an extracted one by copy-paste (`multiply`), preview one,
write review pages of one, re-phrase one's expressions, or check the tagger on them; or write synthetic video clips
with per-frame ground truth (`video`), or simulated room recordings for from-bag with their truth (`room-sim`) and
score from-bag on them (`room-check`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sahm_core.config import ModelConfig
from sahm_core.data.rephrase import STYLES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="source", required=True, metavar="SOURCE")
    syn = sub.add_parser("synthetic", help="procedural scenes with referring expressions (no download)")
    syn.add_argument("--out", type=Path, required=True, help="output dataset folder")
    syn.add_argument("--n", type=int, required=True, help="number of samples over all splits")
    syn.add_argument("--seed", type=int, default=0, help="dataset seed (same seed, same dataset)")
    syn.add_argument("--size", type=int, default=256, help="image side in pixels")
    syn.add_argument("--workers", type=int, default=2, help="worker processes")
    syn.add_argument("--negative-fraction", type=float, default=0.15, help="fraction of expressions naming nothing")
    syn.add_argument("--val-fraction", type=float, default=0.1)
    syn.add_argument("--test-fraction", type=float, default=0.1)

    video = sub.add_parser("video", help="synthetic clips from a moving camera, per-frame ground truth and a rosbag2 "
                                         "each (for sahm eval-video and ros-ror replay)")
    video.add_argument("--out", type=Path, required=True, help="output folder")
    video.add_argument("--n", type=int, required=True, help="number of clips")
    video.add_argument("--seed", type=int, default=0, help="dataset seed (same seed, same clips)")
    # Defaults live in ClipConfig; an option left out keeps it.
    video.add_argument("--size", type=int, help="frame side in pixels (default 256)")
    video.add_argument("--frames", type=int, nargs=2, metavar=("LOW", "HIGH"),
                       help="frames per clip, drawn in LOW..HIGH (default 24 40)")
    video.add_argument("--storage", default="sqlite3", choices=("sqlite3", "mcap"), help="the clips' bag storage")

    bags = sub.add_parser("from-bag", help="pairs (with / without an object) from a fixed camera's rosbags: static "
                                           "stretches, one-object differences, masks, labels")
    bags.add_argument("bags", nargs="+", help="rosbag2 folders (sqlite3 or mcap) or rosbag1 files")
    bags.add_argument("--image-topic", required=True, help="sensor_msgs/Image or CompressedImage topic")
    bags.add_argument("--out", type=Path, required=True,
                      help="output folder: refs.jsonl + images/ targets/ masks/, views.jsonl, objects.jsonl, "
                           "labels.yaml (replaced)")
    bags.add_argument("--label-topic", default=None,
                      help="std_msgs/String topic with what the person said while placing each object "
                           "(\"this is the red mug\")")
    bags.add_argument("--labels", type=Path, default=None,
                      help="a labels.yaml from an earlier run of the same bags, filled in by a person")

    rooms = sub.add_parser("room-sim", help="simulated fixed-camera room recordings (objects placed and taken away, "
                                            "people passing, speech) with ground truth, for from-bag")
    rooms.add_argument("--out", type=Path, required=True, help="output folder")
    rooms.add_argument("--n", type=int, default=1, help="number of recordings")
    rooms.add_argument("--seed", type=int, default=0,
                       help="draws the rooms (or, with --room-seed, the placement timelines)")
    rooms.add_argument("--room-seed", type=int, default=None,
                       help="one room for every recording: same background and objects, new placements")
    rooms.add_argument("--placement-seeds", type=int, nargs="+", default=None,
                       help="with --room-seed: these timelines (instead of --n drawn from --seed)")
    # Defaults live in RoomConfig; an option left out keeps it.
    rooms.add_argument("--size", type=int, help="frame side in pixels (default 256)")
    rooms.add_argument("--fps", type=float, help="frames per second (default 10)")
    rooms.add_argument("--pan", type=float, dest="pan_px_per_s",
                       help="pan the camera this many pixels per second (a moving camera: from-bag refuses it)")
    rooms.add_argument("--storage", default="sqlite3", choices=("sqlite3", "mcap"), help="the bags' storage")

    check_rooms = sub.add_parser("room-check", help="from-bag on each room-sim recording, scored against its truth "
                                                    "(mask IoU, labels, motion)")
    check_rooms.add_argument("data", type=Path, help="room-sim folder")

    coco = sub.add_parser("comcoco", help="ComCOCO-style composites from a local COCO 2014 + RefCOCO+")
    coco.add_argument("--coco", type=Path, required=True,
                      help="COCO folder: train2014/ images and annotations/instances_train2014.json")
    coco.add_argument("--refcoco-plus", type=Path, required=True, help="RefCOCO+ folder holding refs(unc).p")
    coco.add_argument("--out", type=Path, required=True, help="output dataset folder")
    # Defaults live in ComcocoConfig; an option left out keeps it.
    coco.add_argument("--seed", type=int)
    coco.add_argument("--max-pairs", type=int, help="stop after this many image pairs")
    coco.add_argument("--split-sizes", type=int, nargs=3, metavar=("TRAIN", "VAL", "TEST"),
                      help="image pairs per split at most (default: the paper's 20324 1843 1784)")
    coco.add_argument("--negative-fraction", type=float,
                      help="fraction of pairs that also give a negative (an image without what the sentence names)")
    coco.add_argument("--variant", choices=("comcoco", "comcoco+"),
                      help="comcoco (default): appearance + spatial expressions, as the paper trains on; "
                           "comcoco+: appearance only")
    coco.add_argument("--max-background-uses", type=int, help="pairs one background image may serve")
    coco.add_argument("--max-overlap", type=float,
                      help="reject placements with more than this share of the pasted pixels on annotated objects")
    coco.add_argument("--max-hidden", type=float,
                      help="reject placements hiding more than this share of any annotated background object")

    multiply = sub.add_parser("multiply", help="copy-paste the labelled objects of a from-bag folder into its other "
                                               "static views (and synthetic backgrounds); rows appended")
    multiply.add_argument("data", type=Path, help="folder from `from-bag`: views.jsonl, objects.jsonl, refs.jsonl")
    multiply.add_argument("--n", type=int, required=True, help="composites to add")
    multiply.add_argument("--seed", type=int, default=0, help="same seed, same composites; one run per seed")
    multiply.add_argument("--synthetic-backgrounds", type=float, default=0.0,
                          help="fraction of the composites pasted on synthetic backgrounds instead of views")
    multiply.add_argument("--negative-fraction", type=float, default=None,
                          help="negatives added per composite (default: ComCOCO's 0.15)")

    review = sub.add_parser("review", help="review pages (PNG) of a built dataset: composite, mask, expressions")
    review.add_argument("data", type=Path, help="dataset folder")
    review.add_argument("--out", type=Path, default=None, help="folder for the pages (default DATA/review)")
    review.add_argument("--per-page", type=int, default=6, help="image pairs per page")
    review.add_argument("--split", choices=("train", "val", "test"), default=None)

    rephrase = sub.add_parser("rephrase", help="a copy of one split with its expressions re-phrased (held-out, "
                                               "dev or speech-style), images linked, for sahm eval")
    rephrase.add_argument("data", type=Path, help="dataset folder")
    rephrase.add_argument("--style", choices=STYLES, required=True,
                          help="heldout: the one-time check; dev: unseen phrasing for tuning; speech: training's")
    rephrase.add_argument("--seed", type=int, default=0)
    rephrase.add_argument("--split", choices=("train", "val", "test"), default="test")
    rephrase.add_argument("--out", type=Path, required=True, help="output dataset folder (refs.jsonl + links)")

    check = sub.add_parser("tagger-check", help="the syntax tagger's word accuracy on a dataset's tagged expressions")
    check.add_argument("data", type=Path, help="dataset folder")
    check.add_argument("--split", choices=("train", "val", "test"), default="test")
    check.add_argument("--tagger", type=Path, default=None, help="tagger file or folder (default: the bundled one)")
    check.add_argument("--errors", type=int, default=0, metavar="N",
                       help="also list the N most frequent mistakes (word, gold -> predicted, where)")
    check.add_argument("--text-len", type=int, default=ModelConfig.text_len, metavar="T",
                       help="the model's fixed token count: report the commands over it and what its window cuts")

    sheet = sub.add_parser("preview", help="contact sheet PNG of a dataset: image / target / mask / expression")
    sheet.add_argument("--data", type=Path, required=True, help="dataset folder")
    sheet.add_argument("--out", type=Path, required=True, help="PNG to write")
    sheet.add_argument("--count", type=int, default=12)
    sheet.add_argument("--split", choices=("train", "val", "test"), default=None)


def main(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except (FileNotFoundError, ValueError) as e:  # bad input: one clear line, no traceback
        print(f"sahm make-data {args.source}: error: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.source == "synthetic":
        from sahm_core.data.synthetic import make_dataset

        refs, throughput = make_dataset(args.out, args.n, args.seed, args.size, args.workers, args.negative_fraction,
                                        args.val_fraction, args.test_fraction)
        print(f"wrote {args.n} samples ({args.size}px) to {refs.parent}: {throughput}")
        return 0
    if args.source == "video":
        from sahm_core.data.video import ClipConfig, make_video_dataset

        options = {"size": args.size, "frames": tuple(args.frames) if args.frames else None}
        cfg = ClipConfig(**{name: value for name, value in options.items() if value is not None})
        clips = make_video_dataset(args.out, args.n, args.seed, cfg, args.storage)
        print(f"wrote {args.n} clips ({cfg.size}px, {cfg.frames[0]}-{cfg.frames[1]} frames) to {clips.parent}")
        return 0
    if args.source == "from-bag":
        from sahm_core.data.from_bag import extract

        print(extract(args.bags, args.image_topic, args.out, args.label_topic, args.labels))
        return 0
    if args.source == "room-sim":
        from sahm_core.data.room_sim import RoomConfig, make_room_dataset, read_room_rows, replace_config

        cfg = replace_config(RoomConfig(), size=args.size, fps=args.fps, pan_px_per_s=args.pan_px_per_s)
        rows = make_room_dataset(args.out, args.n, args.seed, cfg, args.storage, args.room_seed, args.placement_seeds)
        print(f"wrote {len(read_room_rows(rows.parent))} room recordings ({cfg.size}px, {cfg.fps:g} fps) "
              f"to {rows.parent}")
        return 0
    if args.source == "room-check":
        from sahm_core.data.room_sim import check_rooms, format_check

        print(format_check(check_rooms(args.data)))
        return 0
    if args.source == "rephrase":
        from sahm_core.data.rephrase import rephrase_dataset

        print(f"wrote {rephrase_dataset(args.data, args.out, args.style, args.seed, args.split)}")
        return 0
    if args.source == "tagger-check":
        from sahm_core.data.rephrase import tagger_check, window_check

        r = tagger_check(args.data, args.split, args.tagger, args.errors)
        print(f"{args.data} [{args.split}]: {r['sentences']} expressions, {r['words']} words | word accuracy "
              f"{r['word_accuracy']:.4f}  F1 IW {r['IW_f1']:.4f}  AW {r['AW_f1']:.4f}  O {r['O_f1']:.4f}  "
              f"sentence accuracy {r['sentence_accuracy']:.4f}")
        for (word, gold, predicted, where), count in r.get("mistakes", []):
            print(f"{count:5d}  {word!r}: {gold} -> {predicted} ({where})")
        w = window_check(args.data, args.split, args.tagger, args.text_len)
        n = w["commands"]
        print(f"token window T={args.text_len}: {w['over']} of {n} commands over T ({w['over'] / n:.1%}); "
              f"the object's tokens cut in {w['object_lost']} ({w['object_lost'] / n:.1%}), "
              f"a described word's in {w['described_lost']} ({w['described_lost'] / n:.1%})")
        return 0
    if args.source == "preview":
        from sahm_core.data.preview import contact_sheet

        print(f"wrote {contact_sheet(args.data, args.out, args.count, args.split)}")
        return 0
    if args.source == "multiply":
        from sahm_core.data.copy_paste import multiply_dataset

        options = {} if args.negative_fraction is None else {"negative_fraction": args.negative_fraction}
        print(multiply_dataset(args.data, args.n, args.seed, args.synthetic_backgrounds, **options))
        return 0
    if args.source == "review":
        from sahm_core.data.review import review_pages

        pages = review_pages(args.data, args.out, args.per_page, args.split)
        print(f"wrote {len(pages)} review pages to {pages[0].parent}")
        return 0
    from sahm_core.data.comcoco import build

    options = {"seed": args.seed, "max_pairs": args.max_pairs, "split_sizes": args.split_sizes,
               "negative_fraction": args.negative_fraction, "max_background_uses": args.max_background_uses,
               "max_overlap": args.max_overlap, "max_hidden": args.max_hidden,
               "spatial": None if args.variant is None else args.variant == "comcoco"}
    refs = build(args.coco, args.refcoco_plus, args.out,
                 **{name: value for name, value in options.items() if value is not None})
    print(f"wrote ComCOCO dataset to {refs.parent}")
    return 0
