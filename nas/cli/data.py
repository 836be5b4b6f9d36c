"""Data tools: ``nas data prepare`` (decode a data set once) and ``nas data verify``."""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any, TextIO

__all__ = ["register"]

_SHOW_SKIPPED = 10   # unreadable images named on the terminal; the manifest lists them all
_LINE_EVERY_S = 10.0  # progress lines when stderr is not a terminal


def register(sub: argparse._SubParsersAction) -> None:
    from nas.data.writer import SOURCE_FORMATS

    p = sub.add_parser("data", help="data tools: `nas data prepare SRC OUT --resolution R`, `nas data verify OUT`")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    q = data_sub.add_parser(
        "prepare", help="decode a data set once into a prepared folder (uint8 .npy arrays + manifest.json) "
                        "that every trial memory-maps; rerun to resume an interrupted one")
    q.add_argument("src", help="an image folder (train/<class>/*.JPEG [+ val/<class>/], or <class>/*), a CIFAR-10/100 "
                               "or (Fashion-)MNIST folder, or an .npz with x, y [, x_test, y_test]")
    q.add_argument("out", help="the folder to write; train with --dataset prepared --data-dir OUT")
    q.add_argument("--resolution", type=int, required=True, help="side of the stored images (shorter side resized, "
                                                                 "centre crop)")
    q.add_argument("--classes", metavar="K|FILE", help="keep the first K classes (sorted names), or the classes "
                                                       "FILE lists (one a line)")
    q.add_argument("--images-per-class", type=int, metavar="M", help="keep the first M training images per class")
    q.add_argument("--val-size", type=int, metavar="V", help="training images held out as minival "
                                                             "(default 10%%, at most 25,000)")
    q.add_argument("--seed", type=int, default=0, help="seed of the minival choice (default 0)")
    q.add_argument("--workers", type=int, help="decoding processes (default: every usable core)")
    q.add_argument("--format", choices=SOURCE_FORMATS, default="auto", help="the source's format (default: "
                                                                              "told from its files)")
    q.set_defaults(handler=cmd_prepare)
    v = data_sub.add_parser("verify", help="check a prepared folder against its manifest (shapes, sizes, checksums)")
    v.add_argument("folder")
    v.set_defaults(handler=cmd_verify)


def cmd_prepare(args: argparse.Namespace) -> int:
    from nas.data.writer import prepare, read_class_list

    classes: Any = None
    if args.classes is not None:
        classes = int(args.classes) if args.classes.isdigit() else read_class_list(args.classes)
    progress = _Progress(sys.stderr)
    try:
        result = prepare(args.src, args.out, resolution=args.resolution, classes=classes,
                         images_per_class=args.images_per_class, val_size=args.val_size, seed=args.seed,
                         workers=args.workers, source_format=args.format, progress=progress)
    finally:
        progress.close()
    m = result.manifest
    counts = ", ".join(f"{m.images[split]:,} {split}" for split in ("train", "minival", "test") if split in m.images)
    print(f"{result.path}: {counts} images, {m.num_classes} classes, {m.resolution}x{m.resolution}")
    if result.decoded == 0 and result.resumed_from == 0:
        print("  already prepared from the same source and options: nothing to do")
    else:
        rate = result.decoded / result.seconds if result.seconds > 0 else 0.0
        resumed = f", resumed after {result.resumed_from:,} done before" if result.resumed_from else ""
        print(f"  {result.decoded:,} images in {result.seconds:.1f} s ({rate:,.0f} images/s){resumed}")
    if m.skipped:
        s = "" if len(m.skipped) == 1 else "s"
        shown = ", ".join(m.skipped[:_SHOW_SKIPPED])
        more = f", ... (all {len(m.skipped):,} listed in manifest.json)" if len(m.skipped) > _SHOW_SKIPPED else ""
        print(f"skipped {len(m.skipped):,} unreadable image{s}: {shown}{more}")
    print(f"train with: --dataset prepared --data-dir {result.path}   (experiment: dataset: prepared, "
          f"data_dir: {result.path})")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from nas.data.prepared import read_manifest, verify_prepared

    problems = verify_prepared(args.folder)
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        return 1
    files = len(read_manifest(args.folder).files)
    print(f"{args.folder}: {files} files match manifest.json (shapes, sizes, sha256)")
    return 0


class _Progress:
    """A prepare's progress: a tqdm bar per stage on a terminal, a plain line every 10 s otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream, self.tty = stream, stream.isatty()
        self.stage: str | None = None
        self.bar: Any = None
        self.started = self.printed = 0.0
        self.base = 0  # done when the stage was first reported (a resumed prepare starts above 0)

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if stage != self.stage:
            self.close()
            self.stage, self.started, self.printed, self.base = stage, now, now, done
            if stage == "checksums":
                print(f"prepare: checksums of {total} files", file=self.stream, flush=True)
                return
            if self.tty:
                from tqdm import tqdm

                self.bar = tqdm(total=total, desc=f"prepare {stage}", unit="img", file=self.stream, leave=True)
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
        elif stage != "checksums" and (done == total or now - self.printed >= _LINE_EVERY_S):
            rate = (done - self.base) / (now - self.started) if now > self.started else 0.0
            print(f"prepare: {stage} {done:,}/{total:,} images ({rate:,.0f}/s)", file=self.stream, flush=True)
            self.printed = now

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
