"""Book orchestration: run the papermill matrix of a profile, write the table of contents, build the site."""
from .build import PAGES, Page, build_book, build_html, plan, run_matrix, write_toc
from .pages import page_notice

__all__ = ["PAGES", "Page", "build_book", "build_html", "page_notice", "plan", "run_matrix", "write_toc"]
