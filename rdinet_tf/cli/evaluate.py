"""Robustness report of a trained model: ``rdinet-evaluate --model run/model.keras --dataset mnist``.

Prints TA, ATA per attack and objective, cost and exit shares of the adaptive
model (see :mod:`rdinet_tf.evaluation.report`) and writes the report as JSON with ``--out``.
"""

from pathlib import Path

from rdinet_lite import arguments, files
from rdinet_lite.errors import InputError
from rdinet_tf.cli import common
from rdinet_tf.catalog import EVALUATION_ATTACKS, MODELS


def parser():
    parser = arguments.ArgumentParser(prog="rdinet-evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a .keras file written by rdinet-train")
    common.add_data_arguments(parser)
    parser.add_argument("--attacks", default="pgd",
                        help=f"comma-separated: {','.join(EVALUATION_ATTACKS)} (default: pgd)")
    common.add_attack_arguments(parser, training=False, models="--model-name")
    parser.add_argument("--model-name", choices=MODELS, default=None,
                        help="attack defaults from the paper recipe of this reference model (the names of "
                        "rdinet-train --model) (default: smallcnn for 1-channel images, resnet38 for 3-channel)")
    parser.add_argument("--objectives", help="comma-separated attack objectives (default: every exit, "
                        "average, max_average, routing, exit_hijack)")
    parser.add_argument("--samples", type=arguments.positive_int, help="evaluate the first N test images "
                        "(default: all)")
    parser.add_argument("--batch-size", type=arguments.positive_int, default=256,
                        help="images per attack and inference batch (default: 256)")
    common.add_calibration_arguments(parser, None, "the model's saved thresholds; equal_share for a model saved "
                                     "without")
    parser.add_argument("--autoattack", action="store_true",
                        help="also run the AutoAttack-style suite (APGD-CE, APGD-DLR, APGD-T, Square)")
    parser.add_argument("--autoattack-steps", type=arguments.positive_int, default=100,
                        help="APGD iterations (default: 100)")
    parser.add_argument("--autoattack-queries", type=arguments.positive_int, default=5000,
                        help="Square iterations (default: 5000)")
    parser.add_argument("--autoattack-targets", type=arguments.positive_int, default=9,
                        help="APGD-T target classes (default: 9)")
    parser.add_argument("--autoattack-after-report", action="store_true",
                        help="run the suite only on the samples every attack form above left correct: the same "
                        "per-sample worst case in less time, but no robust accuracy of the suite alone")
    parser.add_argument("--attack-cache", metavar="DIR",
                        help="keep each attack's adversarial images in DIR, so that the same command run again "
                        "after an interruption makes only the missing attacks; emptied once the report is written (default: "
                        "attacks are not kept)")
    parser.add_argument("--out", help="write the report as JSON here (default: print only)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    return parser


@arguments.command(parser)
def main(args):
    from rdinet_tf.experiments import settings  # after parsing: --help loads no TensorFlow

    settings.check_calibration(args)
    if args.autoattack_after_report and not args.autoattack:
        raise InputError("--autoattack-after-report narrows the suite's samples: add --autoattack or drop it")
    if args.out:
        files.check_output(args.out, directory=False, overwrite=args.overwrite, inputs=[args.model])
        with files.lock(args.out):
            _evaluate(args)
    else:
        _evaluate(args)


def _evaluate(args):
    from rdinet_tf import attacks, data, evaluation, models
    from rdinet_tf.experiments import settings

    model = models.load(args.model)
    settings.check_dataset(model, args.dataset, args.model)
    objectives = settings.objectives(args.objectives, model.num_exits)
    paper = settings.paper_recipe_for(model.image_shape, args.model_name)
    eps = settings.or_default(args.eps, paper.eps)
    step_size = settings.or_default(args.step_size, paper.step_size)
    steps = settings.or_default(args.attack_steps, paper.eval_attack_steps)
    methods = settings.evaluation_attacks(args.attacks, eps, step_size, steps)
    suite = (attacks.AutoAttack(eps, args.autoattack_steps, args.autoattack_queries, args.autoattack_targets,
                                after_report=args.autoattack_after_report) if args.autoattack else None)
    splits = data.load(args.dataset, data_dir=args.data_dir)
    with attacks.attack_cache(args.attack_cache) as cache:
        if args.calibration is not None:
            model.exit_policy = settings.calibrated_policy(args, model, splits, attacks.PGD(eps, step_size, steps))
        report = evaluation.evaluate_splits(model, splits, methods, args.samples, args.batch_size,
                                            objectives=objectives, autoattack=suite)
        print(report.table())
        if args.out:
            out = Path(args.out)
            files.publish(out.parent, {out.name: files.json_writer(report.to_dict())}, replace=args.overwrite)
            print(f"report written to {out}")
        if cache is not None:
            print(f"{cache.loaded} attacks loaded from {cache.directory}, {cache.made} made; its files deleted")


if __name__ == "__main__":
    raise SystemExit(main())
