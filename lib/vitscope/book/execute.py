"""Execute book jobs with papermill: serially, in parallel processes, or through submitit (Slurm or local).

Each job runs in isolation: a failing notebook is recorded (its executed copy keeps the error outputs and gets a
marked error box at the top) and the other jobs go on. :func:`run_jobs` returns one :class:`Outcome` per job.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .jobs import READ_LOG_ENV, Job

#: Executors ``vitscope book --executor`` accepts. ``local`` runs on this machine (``--jobs N`` processes);
#: ``slurm`` and ``submitit-local`` go through submitit (the second runs submitit's local executor, for tests).
EXECUTORS = ("local", "slurm", "submitit-local")


@dataclass
class Outcome:
    job: Job
    status: str           # "executed", "failed", "skipped" (up to date)
    seconds: float = 0.0
    error: str = ""       # "<ename>: <evalue>" of a failed job


def read_log_path(root: Path, job: Job) -> Path:
    from ..paths import cache_root

    return cache_root() / "book" / "reads" / f"{job.slug}.log"


def execute_job(root: str, job: Job, read_log: str) -> tuple[str, float, str]:
    """Run one job with papermill (in this process's environment); returns ``(status, seconds, error)``.

    Top-level and picklable, so process pools and submitit can run it. The feature store logs every entry the
    page reads into ``read_log`` (through the kernel's inherited environment).
    """
    import papermill as pm

    root_path = Path(root)
    dest = root_path / job.output
    dest.parent.mkdir(parents=True, exist_ok=True)
    Path(read_log).parent.mkdir(parents=True, exist_ok=True)
    Path(read_log).unlink(missing_ok=True)
    previous = os.environ.get(READ_LOG_ENV)
    os.environ[READ_LOG_ENV] = read_log
    t0 = time.perf_counter()
    dest.unlink(missing_ok=True)     # whatever is there after this call comes from this execution
    try:
        check_parameters(root_path / "notebooks" / f"{job.notebook}.ipynb", job.params)
        pm.execute_notebook(str(root_path / "notebooks" / f"{job.notebook}.ipynb"), str(dest),
                            parameters=job.params, kernel_name="python3", cwd=str(dest.parent), progress_bar=False)
        return "executed", time.perf_counter() - t0, ""
    except Exception as exc:   # noqa: BLE001 - isolate every failure; the page and the summary report it
        name = type(exc).__name__
        detail = f"{getattr(exc, 'ename', name)}: {getattr(exc, 'evalue', str(exc))}"
        if not dest.is_file():  # papermill could not even start (e.g. no kernel): leave a page that says so
            _write_failure_notebook(dest, job, detail, traceback.format_exc())
        return "failed", time.perf_counter() - t0, detail
    finally:
        if previous is None:
            os.environ.pop(READ_LOG_ENV, None)
        else:
            os.environ[READ_LOG_ENV] = previous


class UnknownParameterError(ValueError):
    """A papermill parameter the notebook does not declare (papermill itself would only warn)."""


def check_parameters(notebook: Path, params: dict) -> None:
    """Refuse parameters that ``notebook``'s ``parameters`` cell does not declare, naming the known ones."""
    import papermill as pm

    from ..hints import did_you_mean

    known = list(pm.inspect_notebook(str(notebook)))
    for name in params:
        if name not in known:
            raise UnknownParameterError(f"{notebook.name} has no parameter {name!r}; its parameters are "
                                        f"{', '.join(known)}." + did_you_mean(name, known))


def _write_failure_notebook(dest: Path, job: Job, detail: str, trace: str) -> None:
    nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": f"# {job.title}\n"},
                    {"cell_type": "code", "metadata": {}, "execution_count": None, "source": "",
                     "outputs": [{"output_type": "stream", "name": "stderr", "text": trace}]}],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    dest.write_text(json.dumps(nb, indent=1))


def _share_cores(n_jobs: int) -> None:
    """Give each of ``n_jobs`` concurrent kernels its share of the cores (inherited through the environment):
    torch's default of one thread per core in every kernel oversubscribes the machine and spin-waits."""
    threads = str(max(1, (os.cpu_count() or 1) // n_jobs))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, threads)


def _local(root: Path, jobs: list[Job], n_jobs: int) -> list[tuple[str, float, str]]:
    args = [(str(root), job, str(read_log_path(root, job))) for job in jobs]
    _share_cores(n_jobs)
    # spawn: a fresh interpreter per worker, no forked torch/zmq state
    with ProcessPoolExecutor(max_workers=n_jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(execute_job, *zip(*args)))


def _submitit(root: Path, jobs: list[Job], cluster: str, gpu: bool) -> list[tuple[str, float, str]]:
    try:
        import submitit
    except ImportError as exc:
        raise ImportError("`--executor slurm` needs submitit: pip install 'vitscope[cluster]'.") from exc
    from ..paths import cache_root

    executor = submitit.AutoExecutor(folder=str(cache_root() / "book" / "submitit" / "%j"), cluster=cluster)
    params = {"timeout_min": 120}
    if cluster == "slurm":
        params.update(slurm_gpus_per_node=1 if gpu else 0, cpus_per_task=8 if gpu else 2)
    executor.update_parameters(**params)
    submitted = [executor.submit(execute_job, str(root), job, str(read_log_path(root, job))) for job in jobs]
    return [s.result() for s in submitted]


def run_jobs(root: Path, jobs: list[Job], *, n_jobs: int = 1, executor: str = "local", gpu: bool = False,
             log=print) -> list[Outcome]:
    """Execute ``jobs`` stage by stage (a stage may read what earlier stages cached); never stops on a failure."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor={executor!r}; choose from {EXECUTORS}.")
    outcomes = []
    for stage in sorted({j.stage for j in jobs}):
        batch = [j for j in jobs if j.stage == stage]
        def report(job, result):
            status, seconds, error = result
            log(f"[vitscope book]   {job.output}: {status} in {seconds:.1f} s" + (f" ({error})" if error else ""))
            outcomes.append(Outcome(job, status, seconds, error))

        if executor == "local" and (n_jobs <= 1 or len(batch) <= 1):
            for job in batch:   # one at a time: say what runs, then how it went, as it goes
                log(f"[vitscope book] execute {job.notebook} {job.params} -> {job.output}")
                report(job, execute_job(str(root), job, str(read_log_path(root, job))))
            continue
        for job in batch:
            log(f"[vitscope book] execute {job.notebook} {job.params} -> {job.output}")
        if executor == "local":
            results = _local(root, batch, n_jobs)
        else:
            results = _submitit(root, batch, "local" if executor == "submitit-local" else "slurm", gpu)
        for job, result in zip(batch, results):
            report(job, result)
    return outcomes
