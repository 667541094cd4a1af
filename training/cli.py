"""Command line of the offline training package: ``python -m training COMMAND ...``.

Commands:
    masks    derive bacillus masks from boxes; write masks, overlays and box galleries to look at
    split    make a train / validation / test split by field, or by slide for a UFAM folder (fixed in
             training/splits/)
    patches  cut the paper's 45×45 training patches for the train and validation fields of a split
    synth    write a small synthetic ZN-like data set in any annotation format
    train    train the patch CNN with a recipe (paper, hard-negatives, augmented, multi-lab, ...)
    calibrate  fold Platt calibration fitted on the validation fields into a run (recipe calibrated)
    export   write a run's dense network as ONNX with its metadata
    evaluate score the shipped model, patch by patch on crops, a colour baseline and variants (pixel and
             bacillus level); write report.json, report.md, a precision-recall curve and a gallery
    labs     score models (with their filters) on another lab's slides (UFAM DDS1): recall at the experts'
             points, false bacilli per negative field, the grade of a simulated negative slide
    objects  train the object filter (scikit-learn, exported as ONNX) on a model's candidates
    ship     copy the run with the best test bacillus F1 into models/<model_id>/ and write its model card
    finetune adapt a model folder to a lab's own annotated fields, into a new servable model folder
    fast     write a model folder's fast-mode networks: the coarse pass, int8 copies and the cascade (mode=fast)
    cascade  cut a model folder's fast networks at their last convolution (cascade.json): fast mode reads that
             convolution only where a sparser look saw anything; with int8 copies for its screening
    screening  (re)write only the cascade's int8 screening parts, their margin chosen on every lab's validation fields
    domain   write a model folder's training domain (domain.json): the per-field domain check's spreads, its limit
             (chosen on validation fields of two labs) and the false bacilli the slide decision rests on
    lab-profile  write a lab's profile (labs/<lab_id>/profile.json) from its confirmed-negative fields and
             annotated positives: its operating point and the false-bacilli rate its slides are decided on
    quality     choose the field quality check's limits on every lab's validation fields (quality.json)
    pixel-size  measure a lab's rods in its single-bacillus boxes: its pixel size; with --model, write the folder's
             scale.json (the pixel size of its training fields, which the service resamples every field to)
    simulate-slides  decide simulated slides of a lab's negative fields and annotated bacilli, and of the model's
             own lab's test fields, by the service's rules, with and without a lab profile
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from service.engine.defaults import THRESHOLD
from service.engine.errors import ModelContractError
from service.engine.modes import Mode
from training.data.annotations import AnnotationError, parse_label_map, use_labels
from training.data.box_masks import MaskDerivation
from training.data.dataset import AnnotationKind
from training.data.sampling import SamplerConfig
from training.evaluation.metrics import ObjectRules
from training.fit.recipes import RECIPES
from training.model.quant_recipe import DEFAULT_RECIPE, QuantRecipe
from training.paths import (
    DEFAULT_CACHE,
    LABS_DIR,
    MODELS_DIR,
    SHIPPED_DIR,
    SHIPPED_MODEL,
    UFAM_DDS1,
    UFAM_DDS1_SPLIT,
    ZNSM_MS1,
    ZNSM_MS1_SPLIT,
    ZNSM_MS2,
    ZNSM_MS2_SPLIT,
)

log = logging.getLogger(__name__)


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--data", type=Path, default=ZNSM_MS2, help="data set folder (default: %(default)s)")


def _add_mask_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = MaskDerivation()
    group = parser.add_argument_group("mask derivation from boxes")
    group.add_argument(
        "--min-contrast",
        type=float,
        default=defaults.min_contrast,
        help="least a* above the local background (default: %(default)s)",
    )
    group.add_argument(
        "--min-area",
        type=int,
        default=defaults.min_area_px,
        help="specks smaller than this many pixels are dropped (default: %(default)s)",
    )
    group.add_argument(
        "--overshoot",
        type=int,
        default=defaults.overshoot_px,
        help="pixels a rod may run past its box (default: %(default)s)",
    )


def _mask_params(args: argparse.Namespace) -> MaskDerivation:
    return MaskDerivation(min_contrast=args.min_contrast, min_area_px=args.min_area, overshoot_px=args.overshoot)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_arguments, _ in COMMANDS.values():
        add_arguments(commands)
    for command in commands.choices.values():
        command.add_argument(
            "--labels",
            help="map the annotation files' own label names onto ours: OURS=THEIRS pairs, comma-separated "
            "(e.g. bacillus=TBbacillus,artifact=debris), or a file of such lines or a JSON {THEIRS: OURS}",
        )
    return parser


# Each command imports what it needs when it runs: `--help` loads neither TensorFlow nor ONNX Runtime.


def add_masks(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    masks = commands.add_parser("masks", help="derive masks from boxes; write masks, overlays, galleries")
    _add_data_arguments(masks)
    _add_mask_arguments(masks)
    masks.add_argument("--fields", help="comma-separated field ids (default: all)")
    masks.add_argument("-o", "--out", type=Path, required=True, help="output folder")


def run_masks(args: argparse.Namespace) -> int:
    from training.data.mask_review import write_mask_review

    fields = [f.strip() for f in args.fields.split(",")] if args.fields else None
    write_mask_review(args.data, args.out, _mask_params(args), fields)
    return 0


def add_split(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    split = commands.add_parser("split", help="make a split by field, stratified by bacilli per field")
    _add_data_arguments(split)
    split.add_argument("--test-fraction", type=float, help="share of fields held out (default 0.3; UFAM slides 0.25)")
    split.add_argument(
        "--validation-fraction", type=float, help="share of the rest for validation (default 0.1; UFAM slides 0.2)"
    )
    split.add_argument("--seed", type=int, default=0)
    split.add_argument("-o", "--out", type=Path, required=True, help="split JSON to write")
    split.add_argument("--force", action="store_true", help="overwrite an existing split file")


def run_split(args: argparse.Namespace) -> int:
    from training.data.split import split_dataset
    from training.data.ufam import POSITIVES, read_ufam, split_ufam

    if (args.data / POSITIVES).is_dir():  # the UFAM layout: split by slide
        test, validation = args.test_fraction or 0.25, args.validation_fraction or 0.2
        by_slide = split_ufam(args.data, args.out, test, validation, args.seed, force=args.force)
        ufam = read_ufam(args.data)
        for name in ("train", "validation", "test"):
            part = ufam.of_slides(by_slide.subset(name))
            log.info(
                "%-10s slides %s: %d positive patches, %d negative fields",
                name,
                " ".join(by_slide.subset(name)),
                len(part.positives),
                len(part.negatives),
            )
        return 0
    split, counts = split_dataset(
        args.data, args.out, args.test_fraction or 0.3, args.validation_fraction or 0.1, args.seed, force=args.force
    )
    for name in ("train", "validation", "test"):
        ids = split.subset(name)
        log.info("%-10s %2d fields, %3d bacillus boxes: %s", name, len(ids), sum(counts[i] for i in ids), " ".join(ids))
    return 0


def add_patches(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    patches = commands.add_parser("patches", help="cut training and validation patches (the paper's sampler)")
    _add_data_arguments(patches)
    _add_mask_arguments(patches)
    patches.add_argument("--split", type=Path, default=ZNSM_MS2_SPLIT, help="split JSON (default: %(default)s)")
    patches.add_argument("--seed", type=int, default=0)
    patches.add_argument("--positives", type=int, default=SamplerConfig.positives_per_field)
    patches.add_argument("--negatives", type=int, default=SamplerConfig.negatives_per_field)
    patches.add_argument(
        "-o",
        "--out",
        type=Path,
        required=True,
        help="output folder for train.npz, validation.npz and patches.json",
    )


def run_patches(args: argparse.Namespace) -> int:
    from training.data.patches import write_patch_sets

    config = SamplerConfig(positives_per_field=args.positives, negatives_per_field=args.negatives)
    write_patch_sets(args.data, args.split, args.out, config, _mask_params(args), args.seed)
    return 0


def add_synth(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    synth = commands.add_parser("synth", help="write a synthetic ZN-like data set")
    synth.add_argument("-o", "--out", type=Path, required=True)
    synth.add_argument("--format", choices=[k.value for k in AnnotationKind], default=AnnotationKind.ZNSM_CSV.value)
    synth.add_argument("--count", type=int, default=6)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--size", type=int, nargs=2, metavar=("WIDTH", "HEIGHT"), default=(320, 240))


def run_synth(args: argparse.Namespace) -> int:
    from training.data.synthetic import write_synthetic_dataset

    write_synthetic_dataset(args.out, AnnotationKind(args.format), args.count, args.seed, tuple(args.size))
    log.info("%d synthetic fields (%s) written to %s", args.count, args.format, args.out)
    return 0


def add_train(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    train = commands.add_parser("train", help="train the patch CNN on the fixed split with a recipe")
    _add_data_arguments(train)
    train.add_argument("--split", type=Path, default=ZNSM_MS2_SPLIT, help="split JSON (default: %(default)s)")
    train.add_argument("--recipe", default="paper", help="one of: " + ", ".join(RECIPES))
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--epochs", type=int, help="override the recipe's number of epochs")
    train.add_argument("--ufam-data", type=Path, default=UFAM_DDS1, help="UFAM DDS1 folder (multi-lab recipes)")
    train.add_argument("--ufam-split", type=Path, default=UFAM_DDS1_SPLIT, help="UFAM split by slide")
    train.add_argument("--init", type=Path, help="start from this patch model's weights (.keras) instead of random")
    train.add_argument("--mine", type=Path, help="dense ONNX model whose false positives give mined negatives")
    train.add_argument(
        "-o", "--out", type=Path, required=True, help="run folder (model.keras, train_log.json, curves.png)"
    )


def run_train(args: argparse.Namespace) -> int:
    from training.fit.recipes import get_recipe
    from training.fit.train import train_recipe

    train_recipe(
        args.data,
        args.split,
        get_recipe(args.recipe),
        args.out,
        seed=args.seed,
        epochs=args.epochs,
        ufam_data=args.ufam_data,
        ufam_split_path=args.ufam_split,
        init=args.init,
        mine=args.mine,
    )
    return 0


def add_calibrate(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    calibrate = commands.add_parser("calibrate", help="calibrate a run on its validation fields")
    _add_data_arguments(calibrate)
    calibrate.add_argument("--split", type=Path, default=ZNSM_MS2_SPLIT)
    calibrate.add_argument("--run", type=Path, required=True, help="run folder to calibrate")
    calibrate.add_argument("-o", "--out", type=Path, required=True, help="new run folder")
    calibrate.add_argument("--ufam", type=Path, help="also calibrate on this UFAM folder's validation slides")
    calibrate.add_argument("--ufam-split", type=Path, default=UFAM_DDS1_SPLIT, help="UFAM split by slide")
    calibrate.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="heatmap cache (default: %(default)s)")


def run_calibrate(args: argparse.Namespace) -> int:
    from training.fit.runs import calibrate_run

    calibrate_run(
        args.run, args.out, args.data, args.split, ufam=args.ufam, ufam_split=args.ufam_split, cache=args.cache
    )
    return 0


def add_export(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    export = commands.add_parser("export", help="export a run's dense network to ONNX")
    export.add_argument("--run", type=Path, required=True, help="run folder with model.keras and train_log.json")
    export.add_argument("-o", "--out", type=Path, help="ONNX file (default: RUN/model.onnx)")


def run_export(args: argparse.Namespace) -> int:
    from training.fit.runs import export_run

    export_run(args.run, args.out)
    return 0


def add_evaluate(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    evaluate = commands.add_parser(
        "evaluate",
        help="score the shipped model, the same model patch by patch, a colour baseline and variants side by side",
    )
    _add_data_arguments(evaluate)
    evaluate.add_argument("--split", type=Path, default=ZNSM_MS2_SPLIT, help="split JSON (default: %(default)s)")
    evaluate.add_argument(
        "--subset",
        choices=["train", "validation", "test", "all"],
        help="fields to score (default: test when the split covers the data set, else all)",
    )
    evaluate.add_argument("--model", type=Path, default=SHIPPED_MODEL, help="dense ONNX model (default: shipped)")
    evaluate.add_argument("--variants", type=Path, nargs="*", default=[], help="more dense ONNX models to compare")
    evaluate.add_argument(
        "--object-filter",
        type=Path,
        help="object filter ONNX for the model's candidates (default: the shipped one with the shipped model)",
    )
    evaluate.add_argument("--no-object-filter", action="store_true", help="leave out the object filter")
    evaluate.add_argument("--object-threshold", type=float, help="filter score threshold (default: its metadata's)")
    evaluate.add_argument("--masks", type=Path, help="folder of ground-truth masks (<id>.png) overriding the data's")
    evaluate.add_argument(
        "--threshold", type=float, default=THRESHOLD, help="P(bacillus) cut (default %(default)s = argmax)"
    )
    evaluate.add_argument("--no-baseline", action="store_true", help="leave out the colour baseline")
    evaluate.add_argument("--baseline-threshold", type=float, help="R − G cut (default: fitted on the train split)")
    evaluate.add_argument(
        "--patch-model",
        type=Path,
        help="Keras patch CNN of --model for the patch-by-patch crops (default: the shipped one for the shipped "
        "model, model.keras beside a run's model.onnx)",
    )
    evaluate.add_argument("--no-patch", action="store_true", help="skip the patch-by-patch crops")
    evaluate.add_argument("--crop", type=int, default=192, help="side of the patch-by-patch crop per field")
    evaluate.add_argument("--no-gallery", action="store_true", help="skip the overlay gallery")
    evaluate.add_argument(
        "--ufam", type=Path, default=UFAM_DDS1, help="UFAM DDS1 folder for the by-lab rows (default: %(default)s)"
    )
    evaluate.add_argument("--ufam-split", type=Path, default=UFAM_DDS1_SPLIT, help="UFAM split by slide")
    evaluate.add_argument("--ufam-subset", default="test", choices=["train", "validation", "test"])
    evaluate.add_argument("--no-ufam", action="store_true", help="leave out the by-lab rows on UFAM")
    evaluate.add_argument("--min-object", type=int, default=ObjectRules.min_object_px, help="least object pixels")
    evaluate.add_argument("--min-hit", type=int, default=ObjectRules.min_hit_px, help="least pixels to find a box")
    evaluate.add_argument(
        "--inside-share", type=float, default=ObjectRules.inside_share, help="share of an object inside boxes"
    )
    evaluate.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="heatmap cache (default: %(default)s)")
    _add_exact_argument(evaluate, "; the threshold sweep then covers every threshold, not only those at and above 0.5")
    evaluate.add_argument("-o", "--out", type=Path, required=True, help="folder for the report, curve and gallery")


def _add_exact_argument(parser: argparse.ArgumentParser, more: str = "") -> None:
    parser.add_argument(
        "--exact",
        action="store_true",
        help="read fields in exact mode (default: fast mode, the service's default, where the model's folder has "
        "its fast networks: the same candidates and kept bacilli, about 12× faster on 2 cores)" + more,
    )


def run_evaluate(args: argparse.Namespace) -> int:
    from training.evaluation.evaluate import evaluate_data

    report = evaluate_data(
        args.data,
        args.out,
        split_path=args.split,
        subset=args.subset,
        model=args.model,
        object_filter=args.object_filter,
        use_object_filter=not args.no_object_filter,
        patch_model=args.patch_model,
        use_patch_model=not args.no_patch,
        variants=args.variants,
        object_threshold=args.object_threshold,
        masks=args.masks,
        threshold=args.threshold,
        rules=ObjectRules(args.min_object, args.min_hit, args.inside_share),
        baseline=not args.no_baseline,
        baseline_threshold=args.baseline_threshold,
        crop_px=args.crop,
        gallery=not args.no_gallery,
        cache=args.cache,
        mode=Mode.EXACT if args.exact else Mode.FAST,
    )
    if not args.no_ufam:
        from training.evaluation.labs import evaluate_labs, pairs_for

        if args.ufam.is_dir():
            used_filter = next((m.get("object_filter") for m in report["methods"] if m.get("object_filter")), None)
            evaluate_labs(
                args.out,
                pairs_for(args.model, Path(used_filter) if used_filter else None, list(args.variants)),
                args.ufam,
                args.ufam_split,
                args.ufam_subset,
                gallery=not args.no_gallery,
                mode=Mode.EXACT if args.exact else Mode.FAST,
            )
        else:
            log.warning("%s is missing: no by-lab rows on UFAM (pass --no-ufam to leave them out)", args.ufam)
    sys.stdout.write(f"wrote {args.out / 'report.md'}, report.json, pr_curve.png and gallery/\n")
    return 0


def parse_pair(text: str) -> tuple[str, Path, Path | None]:
    """``NAME=MODEL[:FILTER]`` → its parts."""
    name, sep, paths = text.partition("=")
    if not sep or not name or not paths:
        raise ValueError(f"--pair {text!r}: expected NAME=MODEL[:FILTER]")
    model, _, filt = paths.partition(":")
    return name, Path(model), Path(filt) if filt else None


def add_labs(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    labs = commands.add_parser("labs", help="score models with their filters on UFAM DDS1 slides (by-lab rows)")
    labs.add_argument(
        "--pair",
        action="append",
        required=True,
        metavar="NAME=MODEL[:FILTER]",
        help="a name, a dense ONNX model and optionally its object filter; repeat for more rows",
    )
    labs.add_argument("--ufam", type=Path, default=UFAM_DDS1, help="UFAM DDS1 folder (default: %(default)s)")
    labs.add_argument("--ufam-split", type=Path, default=UFAM_DDS1_SPLIT, help="UFAM split by slide")
    labs.add_argument("--subset", default="test", choices=["train", "validation", "test"])
    labs.add_argument("--no-gallery", action="store_true", help="skip the galleries")
    _add_exact_argument(labs)
    labs.add_argument("-o", "--out", type=Path, required=True, help="folder: report.json (by_lab), report.md")
    labs.add_argument(
        "--card",
        type=Path,
        metavar="MODEL_FOLDER",
        help="also record the row of this folder's own model and filter in its by_lab.json and MODEL_CARD.md",
    )


def run_labs(args: argparse.Namespace) -> int:
    from training.evaluation.labs import Pair, evaluate_labs

    pairs = [Pair(*parse_pair(text)) for text in args.pair]
    if args.card is not None:
        from training.evaluation.lab_card import check_pairs

        check_pairs(args.card, [(p.model, p.object_filter) for p in pairs])
    mode = Mode.EXACT if args.exact else Mode.FAST
    rows = evaluate_labs(
        args.out, pairs, args.ufam, args.ufam_split, args.subset, gallery=not args.no_gallery, mode=mode
    )
    sys.stdout.write(f"wrote {args.out / 'report.md'} and report.json\n")
    if args.card is not None:
        from training.evaluation.lab_card import write_by_lab

        write_by_lab(args.card, rows, args.ufam_split)
        sys.stdout.write(f"wrote {args.card / 'by_lab.json'} and its card's By lab section\n")
    return 0


def add_objects(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    objects = commands.add_parser(
        "objects", help="train the object filter on a model's candidates in the train and validation fields"
    )
    _add_data_arguments(objects)
    objects.add_argument("--split", type=Path, default=ZNSM_MS2_SPLIT, help="split JSON (default: %(default)s)")
    objects.add_argument("--model", type=Path, default=SHIPPED_MODEL, help="dense ONNX model (default: shipped)")
    objects.add_argument("--subsets", nargs="+", default=["train", "validation"], choices=["train", "validation"])
    objects.add_argument("--ufam", type=Path, help="add the candidates of this UFAM DDS1 folder's slides in --subsets")
    objects.add_argument("--ufam-split", type=Path, default=UFAM_DDS1_SPLIT, help="UFAM split by slide")
    objects.add_argument(
        "--threshold", type=float, default=THRESHOLD, help="candidate P(bacillus) cut (default %(default)s)"
    )
    objects.add_argument("--min-object", type=int, default=ObjectRules.min_object_px, help="least candidate pixels")
    objects.add_argument(
        "--target-recall", type=float, default=0.95, help="share of bacillus candidates the filter keeps (out of fold)"
    )
    objects.add_argument("--seed", type=int, default=0)
    _add_exact_argument(objects)
    objects.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="heatmap cache (default: %(default)s)")
    objects.add_argument("-o", "--out", type=Path, required=True, help="object filter ONNX to write")


def run_objects(args: argparse.Namespace) -> int:
    from training.objects.classifier import train_object_filter

    train_object_filter(
        args.data,
        args.split,
        args.model,
        args.out,
        subsets=tuple(args.subsets),
        ufam=args.ufam,
        ufam_split=args.ufam_split,
        threshold=args.threshold,
        min_object_px=args.min_object,
        target_recall=args.target_recall,
        seed=args.seed,
        cache=args.cache,
        mode=Mode.EXACT if args.exact else Mode.FAST,
    )
    return 0


def add_finetune(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tune = commands.add_parser(
        "finetune", help="fine-tune a model folder on a lab's annotated fields into a new servable model folder"
    )
    tune.add_argument("--base", type=Path, default=SHIPPED_DIR, help="base model folder (default: %(default)s)")
    tune.add_argument(
        "--data",
        type=Path,
        required=True,
        help="the lab's fields: any layout the data layer reads (boxes CSV/VOC XML, points CSV, masks; a field "
        "annotated with no bacillus is a negative field), or a UFAM-style folder (negatives/, positives/)",
    )
    tune.add_argument("--held-out", type=Path, help="held-out fields of the lab (default: a share of --data's)")
    tune.add_argument("--held-out-share", type=float, default=0.3, help="share of --data held out (default 0.3)")
    tune.add_argument("--test", type=Path, help="more fields of the lab to compare base and fine-tuned on")
    tune.add_argument("--epochs", type=int, default=10)
    tune.add_argument("--learning-rate", type=float, default=0.003)
    tune.add_argument("--replay-share", type=float, default=1.0, help="replay patches per lab patch (default 1)")
    tune.add_argument("--replay-filter-fields", type=int, default=2, help="base fields in the filter (default 2)")
    tune.add_argument("--replay-data", type=Path, default=ZNSM_MS2, help="the base model's training data")
    tune.add_argument("--replay-split", type=Path, default=ZNSM_MS2_SPLIT, help="its split (train fields replayed)")
    tune.add_argument(
        "--pixel-calibration",
        choices=["none", "lab", "balanced"],
        default="none",
        help="Platt calibration of P(bacillus) on the held-out pixels: lab = to their bacillus share (the base lab's "
        "for point-centred patches), balanced = equal class weights (default: none; the object threshold is "
        "recalibrated on the held-out fields in any case)",
    )
    tune.add_argument(
        "--negative-budget", type=float, default=0.05, help="false bacilli per held-out negative field (0.05)"
    )
    tune.add_argument(
        "--microns-per-pixel",
        type=float,
        help="the lab's pixel size (µm): its fields are resampled to the base model's scale first, as the service "
        "reads them",
    )
    tune.add_argument(
        "--exhaustive",
        action="store_true",
        help="the lab's fields are annotated exhaustively: with no negative field, candidates off the boxes of the "
        "held-out fields count as false bacilli for --negative-budget (without it and without negative fields the "
        "base filter's threshold is kept)",
    )
    tune.add_argument(
        "--lab-profile",
        type=Path,
        help="a lab profile (labs/<lab_id>) made with the base model: its false candidates on the lab's negative "
        "fields join the patches as hard negatives",
    )
    tune.add_argument(
        "--lab-negatives-root", type=Path, help="where the profile's negative fields are now, if they moved"
    )
    tune.add_argument("--no-znsm-test", action="store_true", help="skip the comparison on the ZNSM test split")
    _add_exact_argument(tune)
    tune.add_argument("--seed", type=int, default=0)
    tune.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="heatmap cache (default: %(default)s)")
    tune.add_argument("-o", "--out", type=Path, required=True, help="the new model folder")


def run_finetune(args: argparse.Namespace) -> int:
    from training.fit.finetune import FinetuneSettings, finetune

    settings = FinetuneSettings(
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        replay_share=args.replay_share,
        replay_filter_fields=args.replay_filter_fields,
        held_out_share=args.held_out_share,
        pixel_calibration=args.pixel_calibration,
        negative_budget=args.negative_budget,
        exhaustive=args.exhaustive,
        microns_per_pixel=args.microns_per_pixel,
        seed=args.seed,
        exact=args.exact,
    )
    finetune(
        args.base,
        args.data,
        args.out,
        held_out=args.held_out,
        test=args.test,
        settings=settings,
        replay_data=args.replay_data,
        replay_split=args.replay_split,
        znsm_test=not args.no_znsm_test,
        cache=args.cache,
        command="python -m training " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        lab_profile=args.lab_profile,
        lab_negatives_root=args.lab_negatives_root,
    )
    return 0


def add_fast(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fast = commands.add_parser("fast", help="write a model folder's fast-mode networks (coarse pass, int8 copies)")
    fast.add_argument("--model", type=Path, default=SHIPPED_DIR, help="model folder (default: %(default)s)")
    _add_data_arguments(fast)
    fast.add_argument("--split", type=Path, default=ZNSM_MS2_SPLIT, help="(default: %(default)s)")
    fast.add_argument(
        "--calibration-fields",
        type=int,
        default=12,
        help="train-split fields per lab (ZNSM) calibrating int8; validation fields check it (default: 12)",
    )
    fast.add_argument(
        "--calibrate-on",
        choices=("every-lab", "data"),
        default="every-lab",
        help="every-lab: train fields of ZNSM-iDB MS-2 and MS-1 and UFAM's negative fields, each at the scale the "
        "service reads it (training/data/every_lab.py); data: --data's train fields only (default: %(default)s)",
    )
    fast.add_argument(
        "--float-convs",
        nargs="*",
        default=list(DEFAULT_RECIPE.float_convs),
        choices=("conv1", "conv2", "conv3", "conv4"),
        help="convolutions kept in float in the int8 copies (default: %(default)s; docs/results.md section 15)",
    )
    fast.add_argument("--windows", type=int, default=8, help="windows per field and network (default: 8)")
    fast.add_argument("--seed", type=int, default=0)
    fast.add_argument(
        "--detections", type=Path, help="JSON of bench/fast_mode.py: record its fast-vs-exact figures in the card"
    )
    fast.add_argument("--card-only", action="store_true", help="keep the networks; update the card and JSON only")


def add_cascade(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cascade = commands.add_parser("cascade", help="cut a model folder's fast networks for the cascade")
    cascade.add_argument("--model", type=Path, default=SHIPPED_DIR, help="model folder (default: %(default)s)")
    cascade.add_argument(
        "--check-fields",
        type=int,
        default=1,
        help="validation fields of each lab on which the cascade reading everything is compared with the networks "
        "(training/data/every_lab.py; default: 1; 0: none)",
    )
    cascade.add_argument("--no-screening", action="store_true", help="do not write the int8 screening parts")
    cascade.add_argument(
        "--screening-fields", type=int, default=12, help="as `screening --fields` (default: %(default)s)"
    )


def run_cascade(args: argparse.Namespace) -> int:
    from training.data.every_lab import every_lab_fields
    from training.model.cascade import write_cascade

    fields = every_lab_fields("validation", args.check_fields) if args.check_fields > 0 else {}
    chosen = [rgb for items in fields.values() for _, rgb in items[: args.check_fields]]
    source = "validation fields of " + ", ".join(
        f"{lab} ({min(len(v), args.check_fields)})" for lab, v in fields.items()
    )
    report = write_cascade(args.model, chosen, source)
    sys.stdout.write(f"wrote the cascade into {args.model}: {json.dumps(report['check'])}\n")
    if not args.no_screening:
        _write_screening(args.model, args.screening_fields)
    return 0


def _write_screening(model: Path, per_lab: int) -> None:
    """The cascade's int8 screening, calibrated on train fields of every lab and chosen on their validation fields."""
    from training.data.every_lab import every_lab_fields
    from training.model.screening import write_screening

    record = write_screening(model, every_lab_fields("train", per_lab), every_lab_fields("validation", per_lab))
    if record.get("chosen"):
        said = (
            f"margin {record['margin']}, first threshold {record['first_threshold']}, "
            f"lattice threshold {record['refine_threshold']}"
        )
    else:
        said = "no margin qualified: the grid stays fp32"
    sys.stdout.write(f"int8 screening in {model}: {said}\n")


def add_screening(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    screening = commands.add_parser(
        "screening", help="int8 copies of the cascade's coarse trunk and head for fast mode's screening (cascade.json)"
    )
    screening.add_argument("--model", type=Path, default=SHIPPED_DIR, help="model folder (default: %(default)s)")
    screening.add_argument(
        "--fields",
        type=int,
        default=12,
        help="train fields per ZNSM microscope calibrating int8, and at most as many validation fields choosing its "
        "margin (UFAM: the negative fields of its train and validation slides; default: %(default)s)",
    )


def run_screening(args: argparse.Namespace) -> int:
    _write_screening(args.model, args.fields)
    return 0


def run_fast(args: argparse.Namespace) -> int:
    from training.data.dataset import discover_fields, read_rgb
    from training.data.every_lab import Rgb, every_lab_fields
    from training.data.split import DatasetSplit
    from training.model.fast_variants import add_detections, write_fast_variants

    if args.card_only:
        if args.detections is None:
            raise ValueError("--card-only needs --detections JSON")
        add_detections(args.model, args.detections)
        sys.stdout.write(f"recorded {args.detections} in {args.model}\n")
        return 0
    if args.calibrate_on == "every-lab":
        calibration = every_lab_fields("train", args.calibration_fields)
        check = every_lab_fields("validation", args.calibration_fields)

        def said(fields: dict[str, list[tuple[str, Rgb]]], part: str) -> str:
            return f"{part} fields of " + ", ".join(f"{lab} ({len(items)})" for lab, items in fields.items())

        calibration_rgb = [rgb for items in calibration.values() for _, rgb in items]
        check_rgb = [rgb for items in check.values() for _, rgb in items]
        calibration_source, check_source = said(calibration, "train"), said(check, "validation")
    else:
        split = DatasetSplit.load(args.split)
        fields = {f.field_id: f for f in discover_fields(args.data)}
        missing = [fid for fid in (*split.train, *split.validation) if fid not in fields]
        if missing:
            raise ValueError(f"{args.split}: fields {', '.join(missing[:5])} are not in {args.data}")
        calibration_ids = split.train[: args.calibration_fields]
        calibration_rgb = [read_rgb(fields[fid].image) for fid in calibration_ids]
        check_rgb = [read_rgb(fields[fid].image) for fid in split.validation]
        calibration_source = f"{len(calibration_ids)} train fields of {args.data.name}"
        check_source = f"the {len(split.validation)} validation fields of {args.data.name}"
    write_fast_variants(
        args.model,
        calibration_rgb,
        check_rgb,
        calibration_source=calibration_source,
        check_source=check_source,
        windows_per_field=args.windows,
        seed=args.seed,
        recipe=QuantRecipe(float_convs=tuple(args.float_convs)),
    )
    if args.calibrate_on == "every-lab":  # the cascade was cut again: its int8 screening too
        _write_screening(args.model, args.calibration_fields)
    if args.detections is not None:
        add_detections(args.model, args.detections)
    sys.stdout.write(f"wrote the fast-mode networks into {args.model}\n")
    return 0


def add_ship(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ship = commands.add_parser("ship", help="ship the best evaluated run into models/ with its model card")
    ship.add_argument("--runs", type=Path, nargs="+", required=True, help="run folders with eval-test/report.json")
    ship.add_argument("--models", type=Path, default=MODELS_DIR, help="(default: %(default)s)")
    ship.add_argument("--bench", type=Path, help="JSON printed by bench/dense_vs_patch.py, for the card")
    ship.add_argument("--evaluation", type=Path, help="report.json of `evaluate` with the object filter, for the card")
    ship.add_argument("--card-only", action="store_true", help="rewrite the card only; leave the model files")


def add_domain(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    domain = commands.add_parser(
        "domain", help="write a model folder's training domain (domain.json) and report how it separates labs"
    )
    domain.add_argument("--model", type=Path, default=SHIPPED_DIR, help="model folder (default: %(default)s)")
    _add_data_arguments(domain)
    domain.add_argument("--split", type=Path, default=ZNSM_MS2_SPLIT, help="(default: %(default)s)")
    domain.add_argument("--ufam", type=Path, default=UFAM_DDS1, help="another lab (default: %(default)s)")
    domain.add_argument("--ufam-split", type=Path, default=UFAM_DDS1_SPLIT, help="its split by slide")
    domain.add_argument(
        "--more",
        action="append",
        default=[],
        metavar="NAME=FOLDER",
        help="more labs' fields to report (never used for a choice), e.g. znsm-ms1=../shared/data/znsm-ms1",
    )
    domain.add_argument("-o", "--out", type=Path, required=True, help="folder for domain_report.json, domain.png")


def run_domain(args: argparse.Namespace) -> int:
    from training.evaluation.domain_fit import build_domain

    more = {}
    for entry in args.more:
        name, sep, folder = entry.partition("=")
        if not sep or not name or not folder:
            raise ValueError(f"--more {entry!r}: expected NAME=FOLDER")
        more[name] = Path(folder)
    build_domain(args.model, args.data, args.split, args.ufam, args.ufam_split, args.out, more)
    return 0


def add_lab_profile(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    profile = commands.add_parser(
        "lab-profile", help="write a lab's profile from its confirmed-negative fields (and annotated positives)"
    )
    profile.add_argument("--lab-id", required=True, help="the lab's id (lower-case letters, digits, . _ -)")
    profile.add_argument("--model", type=Path, default=SHIPPED_DIR, help="model folder (default: %(default)s)")
    profile.add_argument(
        "--negatives", type=Path, nargs="*", default=[], help="folders of confirmed-negative fields (any image type)"
    )
    profile.add_argument("--ufam", type=Path, help="a UFAM-style folder (negatives/, positives/)")
    profile.add_argument("--ufam-split", type=Path, default=UFAM_DDS1_SPLIT, help="its split by slide")
    profile.add_argument(
        "--subsets", nargs="+", default=["train", "validation"], choices=["train", "validation", "test"]
    )
    profile.add_argument(
        "--budget",
        type=float,
        default=0.5,
        help="false bacilli per negative field (95%% bound) the operating point may keep (default %(default)s)",
    )
    profile.add_argument("--pixel-size-um", type=float, help="the microscope's pixel size, when known")
    profile.add_argument("-o", "--out", type=Path, default=LABS_DIR, help="labs folder (default: %(default)s)")


def run_lab_profile(args: argparse.Namespace) -> int:
    from training.evaluation.lab_profiles import make_lab_profile

    make_lab_profile(
        args.lab_id,
        args.model,
        args.out,
        args.budget,
        ufam=args.ufam,
        ufam_split=args.ufam_split if args.ufam else None,
        subsets=tuple(args.subsets),
        negatives=tuple(args.negatives),
        pixel_size_um=args.pixel_size_um,
    )
    return 0


def add_pixel_size(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    size = commands.add_parser(
        "pixel-size",
        help="a lab's pixel size from its annotated rods (with --model, write the folder's scale.json), or estimated "
        "from its unannotated fields by a model (--estimate)",
    )
    size.add_argument("--data", type=Path, default=ZNSM_MS2, help="annotated fields (default: %(default)s)")
    size.add_argument("--split", type=Path, help="a split of them: only --subset's fields are measured")
    size.add_argument("--subset", default="train", choices=["train", "validation", "test"])
    size.add_argument("--model", type=Path, help="a model folder trained on these fields: write its scale.json")
    size.add_argument(
        "--estimate",
        action="store_true",
        help="estimate the pixel size of --data's fields (any images, no annotation needed) from the lengths of the "
        "objects --model keeps on them, pooled; prints JSON and writes nothing",
    )


def _images_of(folder: Path, ids: tuple[str, ...] | None) -> list[Path]:
    from training.data.dataset import discover_fields

    try:
        fields = discover_fields(folder)
    except (OSError, ValueError):
        fields = []
    if fields:
        return [f.image for f in fields if ids is None or f.field_id in set(ids)]
    suffixes = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in suffixes)


def run_pixel_size(args: argparse.Namespace) -> int:
    import json

    from service.engine.loading import SegmenterConfig, load_segmenter
    from service.engine.model_folder import CARD_MD, open_folder
    from service.engine.scale import ModelScale
    from training.data.rod_sizes import ROD_LENGTH_UM, fields_of, measure_rods
    from training.data.split import DatasetSplit
    from training.evaluation.object_lengths import estimate_lab, reference_length
    from training.model.card_sections import replace_section

    ids = tuple(getattr(DatasetSplit.load(args.split), args.subset)) if args.split else None
    which = f"{args.subset} fields of {args.split.name}" if args.split else "all fields"
    if args.estimate:
        if args.model is None:
            raise ValueError("--estimate needs --model: the folder whose scale.json holds the reference length")
        segmenter = load_segmenter(SegmenterConfig.of_folder(open_folder(args.model)))
        model = segmenter.scale
        if model is None or model.object_length_px is None:
            raise ValueError(
                f"{args.model}: its scale.json has no object_length_px (python -m training pixel-size --model …)"
            )
        images = _images_of(args.data, ids)
        if not images:
            raise ValueError(f"{args.data}: no image found")
        found = estimate_lab(segmenter, images, model.object_length_px)
        microns = found.microns(model.pixel_size_um)
        record = {
            "data": str(args.data),
            "fields": len(images),
            "model_id": model.model_id,
            "model_pixel_size_um": model.pixel_size_um,
            "factor": None if found.factor is None else round(found.factor, 4),
            "pixel_size_um": None if microns is None else round(microns, 5),
            "rounds": found.rounds,
            "per_field_factor": [None if f is None else round(f, 3) for f in found.per_field],
        }
        sys.stdout.write(json.dumps(record, indent=1) + "\n")
        return 0 if found.factor is not None else 1
    rods = measure_rods(fields_of(args.data, ids))
    measured = {"data": str(args.data), "fields": which, "pixel_size_um": round(rods.pixel_size_um, 5)}
    sys.stdout.write(json.dumps({**measured, **rods.evidence()}, indent=1) + "\n")
    if args.model is not None:
        folder = open_folder(args.model)
        how = (
            f"estimated from the {rods.rods} single bacilli annotated in the {which} of {args.data.name}: median rod "
            f"length {rods.length_px_median:.1f} px against the {ROD_LENGTH_UM:g} µm typical of M. tuberculosis "
            "(2-4 µm: about ±33% in absolute terms; the ratio between two labs measured alike is what resampling uses)"
        )
        segmenter = load_segmenter(SegmenterConfig.of_folder(folder))
        reference = reference_length(segmenter, _images_of(args.data, ids))
        scale = ModelScale(
            folder.model_id,
            round(rods.pixel_size_um, 5),
            how,
            {**rods.evidence(), **reference.evidence()},
            round(reference.median_px, 2),
        )
        log.info("%s: %.4g µm per pixel (%s)", scale.write(folder.path), scale.pixel_size_um, how)
        section = (
            f"## Scale\n\nTrained on fields of **{scale.pixel_size_um:.4g} µm per pixel** (`scale.json`), {how}. The "
            "service reads every field at this scale: give a field's pixel size (`microns_per_pixel`, a lab "
            "profile's, or the image's resolution) and it is resampled to it. With none, the scale is estimated from "
            f"the field's kept objects against their median length here, {reference.median_px:.1f} px over "
            f"{reference.objects} objects of {reference.fields} fields (`object_length_px`), and the field is "
            "resampled only where that estimate lies outside the range the model reads as it is; with too few "
            "objects this scale is assumed.\n"
        )
        replace_section(folder.path / CARD_MD, "## Scale", section)
    return 0


def add_quality(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    quality = commands.add_parser(
        "quality", help="choose the field quality check's limits on every lab's validation fields (quality.json)"
    )
    quality.add_argument("--model", type=Path, default=SHIPPED_DIR, help="model folder (default: %(default)s)")
    quality.add_argument("--ms2", type=Path, default=ZNSM_MS2, help="(default: %(default)s)")
    quality.add_argument("--ms2-split", type=Path, default=ZNSM_MS2_SPLIT, help="(default: %(default)s)")
    quality.add_argument("--ms1", type=Path, default=ZNSM_MS1, help="(default: %(default)s)")
    quality.add_argument("--ms1-split", type=Path, default=ZNSM_MS1_SPLIT, help="(default: %(default)s)")
    quality.add_argument("--ufam", type=Path, default=UFAM_DDS1, help="(default: %(default)s)")
    quality.add_argument("--ufam-split", type=Path, default=UFAM_DDS1_SPLIT, help="(default: %(default)s)")


def run_quality(args: argparse.Namespace) -> int:
    from service.engine.model_folder import CARD_MD, QUALITY_JSON, open_folder
    from training.evaluation.quality_fit import fit_limits, lab_fields
    from training.model.card_sections import replace_section

    folder = open_folder(args.model)
    labs = lab_fields(args.ms2, args.ms2_split, args.ms1, args.ms1_split, args.ufam, args.ufam_split, "validation")
    model = fit_limits(folder.model_id, labs)
    model.write(folder.path / QUALITY_JSON)
    readable = model.evidence["validation_fields_readable"]
    log.info(
        "%s: %s of %s validation fields readable",
        folder.path / QUALITY_JSON,
        readable,
        model.evidence["validation_fields"],
    )
    rows = "\n".join(
        f"| {name} | {'' if limit.low is None else f'{limit.low:.4g}'} | "
        f"{'' if limit.high is None else f'{limit.high:.4g}'} |"
        for name, limit in model.limits.items()
    )
    section = (
        "## Field quality\n\nEvery field is checked before its count is believed (`quality.json`: focus, exposure, "
        f"stain, and whether it is a ZN smear at all). Limits chosen on {model.source}; {model.rule}. "
        f"{readable} of {model.evidence['validation_fields']} validation fields read as readable.\n\n"
        f"| measurement | low | high |\n| --- | --- | --- |\n{rows}\n"
    )
    replace_section(folder.path / CARD_MD, "## Field quality", section)
    return 0


def add_simulate_slides(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    simulate = commands.add_parser(
        "simulate-slides", help="decide simulated slides (negative, positive) by the service's rules; JSON + Markdown"
    )
    simulate.add_argument("--model", type=Path, default=SHIPPED_DIR, help="model folder (default: %(default)s)")
    simulate.add_argument("--ufam", type=Path, default=UFAM_DDS1, help="the lab's data (default: %(default)s)")
    simulate.add_argument("--ufam-split", type=Path, default=UFAM_DDS1_SPLIT, help="its split by slide")
    simulate.add_argument("--subset", default="test", choices=["train", "validation", "test"])
    simulate.add_argument("--lab", type=Path, help="a lab profile (profile.json) made from the lab's other slides")
    _add_data_arguments(simulate)
    simulate.add_argument("--split", type=Path, default=ZNSM_MS2_SPLIT, help="(default: %(default)s)")
    simulate.add_argument("--slides", type=int, default=200, help="simulated slides per kind (default 200)")
    simulate.add_argument("--fields", type=int, default=100, help="fields per simulated slide (default 100)")
    simulate.add_argument("--seed", type=int, default=0)
    simulate.add_argument(
        "--bacilli", type=int, help="read a seeded sample of this many annotated bacilli (default: all of them)"
    )
    simulate.add_argument(
        "--own-fields", type=int, help="read the first this many of the model's own lab's test fields (default: all)"
    )
    simulate.add_argument("-o", "--out", type=Path, required=True, help="folder for slides.json and slides.md")


def run_simulate_slides(args: argparse.Namespace) -> int:
    from training.evaluation.slide_simulation import simulate, write_report

    record = simulate(
        args.model,
        args.ufam,
        args.ufam_split,
        args.subset,
        args.data,
        args.split,
        args.lab,
        slides=args.slides,
        fields_per_slide=args.fields,
        seed=args.seed,
        bacilli=args.bacilli,
        own_fields=args.own_fields,
    )
    write_report(record, args.out)
    return 0


def run_ship(args: argparse.Namespace) -> int:
    from training.fit.shipping import ship

    ship(args.runs, args.models, args.bench, args.evaluation, args.card_only)
    return 0


Adder = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]
COMMANDS: dict[str, tuple[Adder, Callable[[argparse.Namespace], int]]] = {  # in the order --help lists them
    "masks": (add_masks, run_masks),
    "split": (add_split, run_split),
    "patches": (add_patches, run_patches),
    "synth": (add_synth, run_synth),
    "train": (add_train, run_train),
    "calibrate": (add_calibrate, run_calibrate),
    "export": (add_export, run_export),
    "evaluate": (add_evaluate, run_evaluate),
    "objects": (add_objects, run_objects),
    "labs": (add_labs, run_labs),
    "finetune": (add_finetune, run_finetune),
    "fast": (add_fast, run_fast),
    "cascade": (add_cascade, run_cascade),
    "screening": (add_screening, run_screening),
    "domain": (add_domain, run_domain),
    "lab-profile": (add_lab_profile, run_lab_profile),
    "pixel-size": (add_pixel_size, run_pixel_size),
    "quality": (add_quality, run_quality),
    "simulate-slides": (add_simulate_slides, run_simulate_slides),
    "ship": (add_ship, run_ship),
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        with use_labels(parse_label_map(args.labels) if args.labels else {}):
            return COMMANDS[args.command][1](args)
    except (AnnotationError, ValueError, FileNotFoundError, FileExistsError, ModelContractError) as exc:
        log.error("%s", exc)
        return 2
