"""Robustness report of a trained model: ``rdinet-evaluate --model run/model.keras --dataset mnist``.

Prints TA, ATA per attack and objective, cost and exit shares of the adaptive
model (see :mod:`rdinet_tf.evaluation.report`) and writes the report as JSON with ``--out``.
"""

from pathlib import Path

from rdinet_tf import data, models
from rdinet_tf import evaluation
from rdinet_lite import files
from rdinet_tf.attacks.autoattack import AutoAttack
from rdinet_tf.cli import common
from rdinet_tf.experiments import settings
from rdinet_lite import arguments


def parser():
    parser = arguments.ArgumentParser(prog="rdinet-evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a .keras file written by rdinet-train")
    common.add_data_arguments(parser)
    parser.add_argument("--attacks", default="pgd", help="comma-separated: pgd,fgsm,wrm,noise")
    common.add_attack_arguments(parser, training=False)
    parser.add_argument("--model-name", choices=sorted(models.MODELS), default=None,
                        help="attack defaults from the paper recipe of this reference model (the names of "
                        "rdinet-train --model; default: smallcnn's for 1-channel images, resnet38's otherwise)")
    parser.add_argument("--objectives", help="comma-separated attack objectives (default: every exit, "
                        "average, max_average, routing, exit_hijack)")
    parser.add_argument("--samples", type=arguments.positive_int, help="evaluate the first N test images "
                        "(default: all)")
    parser.add_argument("--batch-size", type=arguments.positive_int, default=256)
    parser.add_argument("--autoattack", action="store_true",
                        help="also run the AutoAttack-style suite (APGD-CE, APGD-DLR, APGD-T, Square)")
    parser.add_argument("--autoattack-steps", type=arguments.positive_int, default=100, help="APGD iterations")
    parser.add_argument("--autoattack-queries", type=arguments.positive_int, default=5000, help="Square iterations")
    parser.add_argument("--autoattack-targets", type=arguments.positive_int, default=9, help="APGD-T target classes")
    parser.add_argument("--out", help="write the report as JSON here")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    return parser


@arguments.command(parser)
def main(args):
    if args.out:
        files.check_output(args.out, directory=False, overwrite=args.overwrite, inputs=[args.model])
        with files.lock(args.out):
            _evaluate(args)
    else:
        _evaluate(args)


def _evaluate(args):
    model = models.load(args.model)
    settings.check_dataset(model, args.dataset, args.model)
    objectives = settings.objectives(args.objectives, model.num_exits)
    paper = settings.paper_recipe_for(model.image_shape, args.model_name)
    eps = settings.or_default(args.eps, paper.eps)
    methods = settings.evaluation_attacks(args.attacks, eps, settings.or_default(args.step_size, paper.step_size),
                                          settings.or_default(args.attack_steps, paper.eval_attack_steps))
    suite = (AutoAttack(eps, args.autoattack_steps, args.autoattack_queries, args.autoattack_targets)
             if args.autoattack else None)
    splits = data.load(args.dataset, data_dir=args.data_dir)
    report = evaluation.evaluate_splits(model, splits, methods, args.samples, args.batch_size,
                                      objectives=objectives, autoattack=suite)
    print(report.table())
    if args.out:
        out = Path(args.out)
        files.publish(out.parent, {out.name: files.json_writer(report.to_dict())}, replace=args.overwrite)
        print(f"report written to {out}")


if __name__ == "__main__":
    raise SystemExit(main())
