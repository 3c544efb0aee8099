"""The ``vitscope`` command: ``models``, ``profiles``, ``book --profile demo``, ``zoo train --all``."""
from __future__ import annotations

import argparse
import sys


def _models(args) -> int:
    from .models import MODELS, list_models

    names = list_models(args.paper)
    width = max(len(n) for n in names)
    print(f"{'name':<{width}}  {'papers':<7} {'family':<24} {'weights':<58} licence")
    for name in names:
        c = MODELS[name]
        src = {"timm": f"timm:{c.arch}.{c.timm_tag}", "url": c.url or "", "package": f"shipped: {c.filename}",
               "random": f"random init, seed {c.seed}"}
        print(f"{name:<{width}}  {'+'.join(c.papers):<7} {c.family:<24} {src[c.source]:<58} {c.license}")
    return 0


def _profiles(args) -> int:
    from .profiles import available_profiles, load_profile

    for name in available_profiles():
        p = load_profile(name)
        print(f"{name:<8} {p.raw.get('title', '')}  models: {', '.join(p.models)}")
    return 0


def _book(args) -> int:
    from .book import build_book

    html = build_book(args.profile, execute=not args.no_execute)
    print(f"[vitscope book] site written to {html / 'index.html'}")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:2] == ["zoo", "train"]:      # the zoo trainer owns its own options
        # Spinning OpenMP threads slow training ~5x when anything else shares the 2 cores; must precede torch.
        import os

        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        from .zoo.train import main as zoo_train

        return zoo_train(argv[2:])

    parser = argparse.ArgumentParser(prog="vitscope", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("models", help="list the model registry")
    p.add_argument("--paper", choices=["TM", "OM", "demo"], help="only models of one paper")
    p.set_defaults(func=_models)
    p = sub.add_parser("profiles", help="list the run profiles")
    p.set_defaults(func=_profiles)
    p = sub.add_parser("zoo", help="train the mini-zoo: `vitscope zoo train --all` (see `vitscope zoo train -h`)")
    p.set_defaults(func=lambda _args: parser.error("use `vitscope zoo train ...` (see `vitscope zoo train -h`)"))
    p = sub.add_parser("book", help="execute the notebooks of a profile and build the website")
    p.add_argument("--profile", default="demo", help="profile name in profiles/ (default: demo)")
    p.add_argument("--no-execute", action="store_true", help="only rebuild the HTML from executed notebooks")
    p.set_defaults(func=_book)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
