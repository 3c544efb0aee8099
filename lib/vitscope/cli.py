"""The ``vitscope`` command: ``models``, ``profiles``, ``book``, ``data fetch|verify``, ``zoo train``."""
from __future__ import annotations

import argparse
import sys


def _models(args) -> int:
    from .models import MODELS, list_models

    names = list_models(args.paper)
    width = max(len(n) for n in names)
    weights = {n: MODELS[n].weights_description() for n in names}
    wcol = max(len(w) for w in weights.values())
    print(f"{'name':<{width}}  {'papers':<7} {'family':<24} {'weights':<{wcol}} licence")
    for name in names:
        c = MODELS[name]
        print(f"{name:<{width}}  {'+'.join(c.papers):<7} {c.family:<24} {weights[name]:<{wcol}} {c.license}")
    return 0


def _profiles(args) -> int:
    from .profiles import available_profiles, load_profile

    for name in available_profiles():
        p = load_profile(name)
        print(f"{name:<8} {p.raw.get('title', '')}  models: {', '.join(p.models)}")
    return 0


def _book(args) -> int:
    from .book import build_book

    html, outcomes = build_book(args.profile, execute=not args.no_execute, n_jobs=args.jobs, executor=args.executor,
                                force=args.force)
    print(f"[vitscope book] site written to {html / 'index.html'}")
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        print(f"[vitscope book] {len(failed)} page(s) failed; their pages show the error. Fix and re-run: "
              "only the failed and changed pages execute again.", file=sys.stderr)
    return 1 if failed else 0


def _data(args) -> int:
    from .data.fetch import fetch_command, verify_command

    if args.data_command == "fetch":
        return fetch_command(args.name, args.root, retries=args.retries, progress=not args.no_progress)
    return verify_command(args.name, args.root)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:2] == ["zoo", "train"]:      # the zoo trainer owns its own options
        # Spinning OpenMP threads slow training ~5x when anything else shares the 2 cores; must precede torch.
        import os

        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        from .zoo.train import main as zoo_train

        return zoo_train(argv[2:])
    if argv[:2] == ["zoo", "card"]:       # re-evaluate shipped zoo models, write their cards' structure block
        from .zoo.structure import main as zoo_card

        return zoo_card(argv[2:])

    if argv[:1] == ["finetune"]:          # the fine-tuning trainer owns its own options (vitscope.finetune.train)
        import os

        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        from .finetune.train import main as finetune_main

        return finetune_main(argv[1:])

    parser = argparse.ArgumentParser(prog="vitscope", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("models", help="list the model registry")
    p.add_argument("--paper", choices=["TM", "OM", "demo"], help="only models of one paper")
    p.set_defaults(func=_models)
    p = sub.add_parser("profiles", help="list the run profiles")
    p.set_defaults(func=_profiles)
    p = sub.add_parser("zoo", help="train the mini-zoo: `vitscope zoo train --all`; refresh cards: "
                                      "`vitscope zoo card --all`")
    p.set_defaults(func=lambda _args: parser.error("use `vitscope zoo train ...` or `vitscope zoo card ...` "
                                                          "(see their -h)"))
    sub.add_parser("finetune", help="fine-tune a model: `vitscope finetune MODEL --profile P` (see its -h)")
    p = sub.add_parser("book", help="execute the notebooks of a profile and build the website")
    p.add_argument("--profile", default="demo", help="profile name in profiles/ (default: demo)")
    p.add_argument("--no-execute", action="store_true", help="only rebuild the HTML from executed notebooks")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="execute up to N pages at once (local executor; default 1)")
    p.add_argument("--executor", default="local", choices=["local", "slurm", "submitit-local"],
                   help="where pages execute: this machine (default), a Slurm cluster through submitit, or "
                        "submitit's local executor")
    p.add_argument("--force", action="store_true", help="execute every page, even those that are up to date")
    p.set_defaults(func=_book)
    p = sub.add_parser("data", help="fetch or verify a dataset described by data_manifests/NAME.yml")
    dsub = p.add_subparsers(dest="data_command", required=True)
    for verb, text in (("fetch", "download, check (sha256) and safely unpack a dataset; resumable"),
                       ("verify", "report what is missing or corrupt under a dataset root, with the fix")):
        q = dsub.add_parser(verb, help=text)
        q.add_argument("name", help="manifest name (see data_manifests/) or path to a .yml")
        q.add_argument("--root", required=True, help="dataset root folder")
        if verb == "fetch":
            q.add_argument("--retries", type=int, default=2, help="resume attempts per file within one run")
            q.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_data)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
