"""Every attack on one model in one table, from ``rdinet-evaluate --out`` reports.

Rows: clean; each attack of the report (PGD forms, exit hijack, the slowdowns)
with its accuracy, cost and exit shares; the AutoAttack-style suite's runs
(cumulative robust accuracy) and its gradient-masking flags; the worst attack
form; the per-sample worst cases over the PGD forms and over PGD and the suite
together. The strongest of the report's attacks is marked in bold; the suite's
rows are cumulative (each attack, with every objective in turn, attacks only the samples every run before
it left correct), one row per attack, or with ``--per-objective`` one row per attack and objective.

    python benchmarks/attack_table.py runs/mnist/rdi_max_average/report_suite.json [more reports ...]
    python benchmarks/attack_table.py --per-objective runs/resnet38_authors/report_suite_1000.json
"""

import argparse
import json
from pathlib import Path


def percent(value):
    return "-" if value is None else f"{100 * value:.1f}%"


def suite_rows(runs, per_objective):
    """The suite's rows: one per attack (its last objective's cumulative accuracy) or one per run."""
    if per_objective:
        return [f"| suite {run['attack']} {run['objective']} (cumulative, {run['attacked']} attacked) | "
                f"{percent(run['robust_accuracy'])} | | |" for run in runs]
    lines = []
    for attack in dict.fromkeys(run["attack"] for run in runs):
        chosen = [run for run in runs if run["attack"] == attack]
        lines.append(f"| suite {attack} x {len(chosen)} objectives (cumulative, {chosen[0]['attacked']} attacked) | "
                     f"{percent(chosen[-1]['robust_accuracy'])} | | |")
    return lines


def table(name, report, per_objective=False):
    """The markdown lines of one report."""
    singles = [*report["attacks"], *report["slowdown"]]
    strongest = min(singles, key=lambda r: r["accuracy"])["name"]
    lines = [f"**{name}** ({report['num_samples']} test images; thresholds {report['thresholds']})", "",
             "| attack | accuracy | MFLOPs (honest) | exit shares (%) |", "|---|---|---|---|"]
    for result in [report["clean"], *singles]:
        accuracy = percent(result["accuracy"])
        if result["name"] == strongest:
            accuracy = f"**{accuracy}**"
        shares = " / ".join(f"{100 * s:.0f}" for s in result["exit_shares"])
        lines.append(f"| {result['name']} | {accuracy} | {result['mflops']:.2f} | {shares} |")
    suite = report.get("autoattack")
    if suite:
        settings = suite["settings"]
        lines += suite_rows(suite["runs"], per_objective)
        lines.append(f"| suite robust accuracy ({settings['steps']} APGD steps, {settings['num_targets']} targets, "
                     f"{settings['queries']} Square queries) | {percent(suite['robust_accuracy'])} | | |")
        raised = [flag for flag, up in suite["flags"].items() if up]
        lines.append(f"| gradient-masking flags | {', '.join(raised) or 'none raised'} | | |")
    lines.append(f"| worst attack form ({report['worst_case_attack']}) | {percent(report['worst_case_ata'])} | | |")
    lines.append(f"| per sample, worst over the PGD forms and slowdowns | "
                 f"{percent(report['per_sample_worst_case_ata'])} | | |")
    if suite:
        lines.append(f"| per sample, worst over those and the suite | "
                     f"{percent(report['per_sample_worst_case_with_autoattack'])} | | |")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="+", help="report JSON files of rdinet-evaluate --out")
    parser.add_argument("--per-objective", action="store_true",
                        help="one suite row per attack and objective (default: one per attack)")
    args = parser.parse_args()
    for path in args.reports:
        print("\n".join(table(Path(path).parent.name, json.loads(Path(path).read_text()), args.per_objective)))
        print()


if __name__ == "__main__":
    main()
