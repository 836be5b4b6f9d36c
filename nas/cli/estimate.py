"""Before a search: ``nas estimate`` (what the search will cost on this machine)."""
from __future__ import annotations

import argparse

from nas.cli._common import print_json

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("estimate", help="what a search will cost on this machine (S measured on a sample), "
                                        "before it runs")
    p.add_argument("experiment", help="an experiment YAML file")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="the overrides nas search would be given")
    p.add_argument("--sample", type=int, metavar="K", help="architectures of the space to measure S of, besides "
                                                           "the reference (default 8)")
    p.add_argument("--no-cache", action="store_true", help="for a search run with --no-cache: every S measured "
                                                           "again")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_estimate)


def cmd_estimate(args: argparse.Namespace) -> int:
    import dataclasses

    from nas.estimate import DEFAULT_SAMPLE, estimate
    from nas.experiment import load_experiment
    from nas.runtime import RuntimeOptions

    experiment = load_experiment(args.experiment, args.overrides)
    runtime = RuntimeOptions.from_environment()
    if args.no_cache:
        runtime = dataclasses.replace(runtime, use_cache=False)
    result = estimate(experiment, runtime, sample=DEFAULT_SAMPLE if args.sample is None else args.sample)
    if args.json:
        print_json(result.to_dict())
        return 0
    clock = " of the simulator's virtual clock" if result.virtual else ""
    print(f"{experiment.name}: {result.trials} trials, backend {result.backend}, {result.parallel} at once")
    print(f"  S: reference {result.reference_step_time * 1e3:.2f} ms; {result.sampled} sampled architectures: "
          f"median {result.step_time * 1e3:.2f} ms")
    print(f"  a trial: {result.epochs} epochs of {result.steps_per_epoch} steps"
          + (f" (expected {result.expected_epochs:.2f} under the pruner)" if result.expected_epochs < result.epochs
             else "")
          + (f", measuring S {result.measure_seconds:.1f} s" if result.measure_seconds else ""))
    print(f"  per trial: median {result.trial_seconds:.1f} s, p10 {result.trial_seconds_p10:.1f} s, "
          f"p90 {result.trial_seconds_p90:.1f} s{clock}")
    reference = f"{result.reference_seconds:.1f} s" if result.reference_seconds else "cached"
    print(f"  before the first trial: {result.one_off_seconds:.1f} s (start-up with the data "
          f"{result.startup_seconds:.1f} s, the study {result.study_seconds:.1f} s, the reference's S {reference})")
    if result.pruner_saving_seconds > 0:
        print(f"  the pruner saves about {result.pruner_saving_seconds:.0f} device-seconds")
    if result.infeasible_share > 0:
        print(f"  {result.infeasible_share:.0%} of the sample breaks the constraints (drawn again, no budget used)")
    for note in result.notes:
        print(f"  - {note}")
    print(result.summary())
    return 0
