"""The claims ledger: every claim of both papers as data, one verdict rule, and its rendering on pages.

``catalogue``  every claim (paper, section, figure, statement, page, check) — :data:`CLAIMS`
``verdict``    the rule: holds / does not hold / inconclusive / cannot be checked — :func:`judge`
``baseline``   the untrained baseline of a comparison and the profile's untrained seeds (:func:`noise_seeds`)
``render``     :func:`show` (a page's claims as MyST), :func:`ledger` and :func:`coverage` (the Claims page)

The checks themselves live with their sections (``vitscope.sections.<section>.check_claims``); this package
imports them only when :func:`run_checks` is called, so sections can import the verdict rule from here.
"""
from .baseline import noise_seeds, untrained_baseline
from .catalogue import CLAIMS, PAPERS, Claim, claims_for_page, get_claim
from .render import (
                     CLAIMS_MIME,
                     book_results,
                     collect,
                     coverage,
                     from_json,
                     ledger,
                     results_table,
                     rule_note,
                     run_checks,
                     show,
                     to_json,
)
from .verdict import (
                     CANNOT_CHECK,
                     CONFIDENCE,
                     DOES_NOT_HOLD,
                     HOLDS,
                     INCONCLUSIVE,
                     N_RESAMPLES,
                     SEED,
                     VERDICTS,
                     ClaimResult,
                     Interval,
                     cannot_check,
                     decide,
                     judge,
)

__all__ = ["CANNOT_CHECK", "CLAIMS", "CLAIMS_MIME", "CONFIDENCE", "DOES_NOT_HOLD", "HOLDS", "INCONCLUSIVE",
           "N_RESAMPLES", "PAPERS", "SEED", "VERDICTS", "Claim", "ClaimResult", "Interval", "book_results",
           "cannot_check", "claims_for_page", "collect", "coverage", "decide", "from_json", "get_claim", "judge",
           "ledger", "noise_seeds", "results_table", "rule_note", "run_checks", "show", "to_json", "untrained_baseline"]
