"""`fpstab sweep GRID.toml --out runs/NAME`: train, evaluate and probe every run of a grid.

    fpstab sweep grid.toml --out runs/NAME [--jobs N] [--device cuda] [--shard i/n] [--stop-after S]

Each run (see fpstab.grid for the file format) goes through three stages,
each a subprocess of this Python (`python -m fpstab.cli ...`), its output in
RUN/logs/STAGE.log:

    train   fpstab train --config RUN/logs/request.json --out RUN [--resume]
    eval    fpstab eval RUN --levels ... (the task's ladder; accuracy at every t)
    probe   fpstab probe --checkpoint RUN --level L ... --json RUN/probe.json, every probe level at once

Rerunning the same command skips what is done and resumes the rest: a
completed training (status.json) is not redone, a killed one continues from
its last checkpoint, and an eval or probe record newer than the final
checkpoint is kept. A diverged training is a result: the run is marked
diverged and neither evaluated nor probed.

--jobs N runs N runs at once (on one GPU they share it). --only KEY=VALUE
keeps the runs whose config matches (e.g. --only task=sudoku --only
task=chess: either task; numbers match by value, so lr=3e-4 names 0.0003),
and refuses a filter that keeps no run of the grid. --shard i/n takes
runs i, i+n, i+2n, ... (0 <= i < n), so n machines or a scheduler's job
array (e.g. SLURM_ARRAY_TASK_ID) can split one grid, all writing into one
results tree: each run's files are written only by the shard that owns it.
--stop-after S starts no training after S seconds and interrupts running
ones (they checkpoint first); runs already trained are still evaluated and
probed. Rerun to finish.

A run directory that holds a run of another config than the grid's (the grid
changed after it started) is refused before anything runs: move it away or
sweep into another --out. --dry-run lists each run and what the sweep would
do next there (train from step 0, resume, eval, probe, nothing, refused) and
runs nothing.

Written into --out: grid.json (the expanded grid) and, per run, RUN/sweep.json
(stage states, exit codes, wall times; schema fpstab.sweep_run/1).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fpstab.grid import Grid, RunSpec, load_grid
from fpstab.reports.run_files import (
    CONFIG_FILE,
    EVAL_FILE,
    GRID_FILE,
    PROBE_FILE,
    STATUS_FILE,
    SWEEP_RUN_FILE,
    SWEEP_RUN_SCHEMA,
)
from fpstab.runs import atomic_write_json, last_checkpoint_path

STAGES = ("train", "eval", "probe")
EXIT_OK, EXIT_FAILED, EXIT_STOPPED = 0, 1, 130


@dataclass(frozen=True)
class SweepOptions:
    """How to run the stages: device, threads per run, data cache, concurrency and time limit."""

    device: str = "cpu"
    threads: int | None = None
    data_cache: str | None = None
    jobs: int = 1
    shard: tuple[int, int] = (0, 1)
    only: tuple[tuple[str, str], ...] = ()
    stop_after_s: float | None = None
    python: str = sys.executable


@dataclass
class Progress:
    """Counts shared by the worker threads; `line()` is the terminal progress line."""

    total: int
    t0: float = field(default_factory=time.perf_counter)
    done: int = 0
    running: int = 0
    failed: int = 0
    run_seconds: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def line(self, jobs: int) -> str:
        left = self.total - self.done - self.running
        mean = sum(self.run_seconds) / len(self.run_seconds) if self.run_seconds else None
        eta = "" if mean is None else f" | {mean:.0f} s/run, ETA ~{_fmt((left + self.running) * mean / jobs)}"
        return (f"{self.done}/{self.total} done ({self.failed} failed), {self.running} running, "
                f"{left} left | {_fmt(time.perf_counter() - self.t0)} elapsed{eta}")


# ---- stage decisions (pure reads of a run directory) -------------------------------------
def run_status(run_dir: Path) -> dict[str, Any]:
    """status.json of a run directory, or {} if it has none (or it is unreadable)."""
    try:
        return json.loads((run_dir / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return {}


def eval_is_current(run_dir: Path, levels: Sequence[str], final_step: int | None) -> bool:
    """True when RUN/eval.json covers `levels` at the final checkpoint's step and was written
    after that checkpoint where it is on disk. The step alone does not tell: a run trained again
    from step 0 (records copied back without weights) reaches the same step with new weights."""
    try:
        rec = json.loads((run_dir / EVAL_FILE).read_text())
    except (OSError, ValueError):
        return False
    have = [str(lv.get("level")) for lv in rec.get("levels", [])]
    return (rec.get("checkpoint_step") == final_step and all(lv in have for lv in levels)
            and written_after_checkpoint(run_dir / EVAL_FILE, run_dir))


def written_after_checkpoint(record: Path, run_dir: Path) -> bool:
    """True when `record` is no older than the run's last checkpoint, or that checkpoint is gone."""
    ckpt = last_checkpoint_path(run_dir)
    return not ckpt.is_file() or record.stat().st_mtime >= ckpt.stat().st_mtime


def weights_lost(spec: RunSpec, run_dir: Path, status: dict[str, Any]) -> bool:
    """True for a completed training whose checkpoint is gone while its eval or probes are not done:
    nothing can finish those records without training again."""
    if status.get("state") != "completed" or last_checkpoint_path(run_dir).is_file():
        return False
    evaluated = eval_is_current(run_dir, spec.eval_levels, status.get("step"))
    return not (evaluated and probe_levels_done(run_dir, spec.probe_levels))


def probe_levels_done(run_dir: Path, levels: Sequence[str]) -> bool:
    """True when RUN/probe.json holds an entry for every level in `levels` (always, for no levels:
    a one-pass baseline has nothing to probe and needs no probe.json)."""
    if not levels:
        return True
    try:
        entries = json.loads((run_dir / PROBE_FILE).read_text()).get("probes", [])
        have = {str(e.get("inputs", {}).get("level")) for e in entries}
    except (OSError, ValueError, AttributeError):
        return False
    return all(str(lv) in have for lv in levels)


def probe_is_current(run_dir: Path, levels: Sequence[str]) -> bool:
    """True when RUN/probe.json covers `levels` and is newer than the last checkpoint (always, for no levels)."""
    if not levels:
        return True  # nothing to probe, so no probe.json to date
    return probe_levels_done(run_dir, levels) and written_after_checkpoint(run_dir / PROBE_FILE, run_dir)


def config_conflict(spec: RunSpec, run_dir: Path) -> str | None:
    """Why this grid run cannot continue in `run_dir`, or None: the run recorded there (config.json)
    resolved to another config than the grid's run does now (the grid, or a preset's value, changed
    after the run started), or its record is not a readable config. Resuming would train the old
    config under the grid's name, and starting over would overwrite another experiment's records."""
    from fpstab.config import TrainConfig, config_diff

    path = run_dir / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        stored = TrainConfig.from_dict(json.loads(path.read_text())["train"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"{path} is not a readable run config ({err})"
    diff = config_diff(stored.to_dict(), spec.config)
    if not diff:
        return None
    return "its config.json has " + ", ".join(f"{k}={a!r} where the grid has {b!r}" for k, (a, b) in diff.items())


def check_conflicts(runs: Sequence[RunSpec], out: Path) -> None:
    """ValueError naming every run whose directory under `out` holds a run of another config."""
    found = {spec.name: why for spec in runs if (why := config_conflict(spec, out / spec.name))}
    if found:
        raise ValueError(f"{len(found)} run director{'y' if len(found) == 1 else 'ies'} under {out} hold a run "
                         "with another config than the grid's:\n" + "\n".join(f"  {k}: {v}" for k, v in found.items())
                         + "\nmove them away (their records are another experiment's) or sweep into another --out")


def next_stage(spec: RunSpec, run_dir: Path) -> str:
    """What the sweep would do next for this run, read from its directory (nothing is run)."""
    if (why := config_conflict(spec, run_dir)) is not None:
        return f"refused: {why}"
    status = run_status(run_dir)
    if weights_lost(spec, run_dir, status):
        return "train again from step 0 (trained, but its checkpoint is not here and its eval or probes are not done)"
    if status.get("state") == "diverged":
        return "nothing (training diverged)"
    if status.get("state") != "completed":
        if last_checkpoint_path(run_dir).is_file():
            return f"train, resuming at its last checkpoint ({status.get('state', 'no status')}, step {status.get('step')})"
        return "train from step 0" + (" (a run started here left no checkpoint)" if (run_dir / CONFIG_FILE).is_file() else "")
    if not eval_is_current(run_dir, spec.eval_levels, status.get("step")):
        return "eval, then probe" if spec.probe_levels else "eval"
    if spec.probe_levels and not probe_is_current(run_dir, spec.probe_levels):
        return "probe"
    return "nothing (done)"


# ---- the commands -------------------------------------------------------------------------
def train_command(spec: RunSpec, run_dir: Path, opts: SweepOptions, grid: Grid) -> list[str]:
    """`fpstab train` for a run: the request file holds its TrainConfig keys (not the preset)."""
    request = run_dir / "logs" / "request.json"
    atomic_write_json(request, {k: v for k, v in spec.train.items() if k != "preset"})
    cmd = [opts.python, "-m", "fpstab.cli", "train", "--config", str(request), "--out", str(run_dir),
           "--device", opts.device, "--quiet"]
    if spec.train.get("preset"):
        cmd += ["--preset", spec.train["preset"]]
    if (run_dir / CONFIG_FILE).is_file():
        cmd.append("--resume")
    if grid.runtime.get("compile") is not None:  # absent: the run's auto choice
        cmd.append("--compile" if grid.runtime["compile"] else "--no-compile")
    if grid.runtime.get("activation_checkpointing"):
        cmd.append("--activation-checkpointing")
    for key in ("log_every", "print_every", "loop_diagnostics_every"):
        if key in grid.runtime:
            cmd += ["--" + key.replace("_", "-"), str(grid.runtime[key])]
    return cmd + _common(opts)


def eval_command(spec: RunSpec, run_dir: Path, opts: SweepOptions, grid: Grid) -> list[str]:
    cmd = [opts.python, "-m", "fpstab.cli", "eval", str(run_dir), "--levels", *spec.eval_levels,
           "--device", opts.device, "--quiet"]
    for key, value in grid.eval.items():
        if key == "plots":
            cmd += [] if value else ["--no-plots"]
        elif key == "compile":
            cmd.append("--compile" if value else "--no-compile")
        else:
            cmd += ["--" + key.replace("_", "-"), str(value)]
    return cmd + _common(opts)


def probe_command(spec: RunSpec, run_dir: Path, opts: SweepOptions, grid: Grid) -> list[str]:
    """`fpstab probe` of a trained run at all its probe levels (the training level is always probed)."""
    cmd = [opts.python, "-m", "fpstab.cli", "probe", "--checkpoint", str(run_dir),
           *[arg for level in spec.probe_levels for arg in ("--level", level)],
           "--json", str(run_dir / PROBE_FILE), "--device", opts.device]
    for key, value in grid.probe.items():
        if key not in ("levels", "extra_args"):
            cmd += ["--" + key.replace("_", "-"), str(value)]
    cmd += grid.probe.get("extra_args", [])
    return cmd + _common(opts)


def _common(opts: SweepOptions) -> list[str]:
    return ["--threads", str(opts.threads)] if opts.threads is not None else []


# ---- running one run ----------------------------------------------------------------------
class Runner:
    """Runs the stages of runs as subprocesses; `stop()` interrupts them (trainings checkpoint)."""

    def __init__(self, grid: Grid, out: Path, opts: SweepOptions, progress: Progress, say: Any) -> None:
        self.grid, self.out, self.opts, self.progress, self.say = grid, out, opts, progress, say
        self.stopped = threading.Event()
        self.interrupted = threading.Event()  # evaluations and probes were interrupted too
        self._procs: dict[subprocess.Popen[bytes], str] = {}
        self._lock = threading.Lock()

    def stop(self) -> None:
        """No training starts or goes on: running trainings get SIGINT (they checkpoint, exit 130).
        Runs whose training is complete are still evaluated and probed, so no trained run is left
        without its records (bound a sweep's total time from outside, e.g. `timeout`)."""
        self.stopped.set()
        with self._lock:
            for proc, stage in self._procs.items():
                if stage == "train" and proc.poll() is None:
                    proc.send_signal(signal.SIGINT)

    def interrupt(self) -> None:
        """Stop now: as `stop()`, and evaluations and probes in progress get SIGINT too (they are
        redone from the start on the next sweep; nothing half-written is kept, records are atomic)."""
        self.stopped.set()
        self.interrupted.set()
        with self._lock:
            for proc in self._procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)

    def run(self, spec: RunSpec) -> dict[str, Any]:
        """All stages of one run; returns (and writes) its RUN/sweep.json record."""
        run_dir = self.out / spec.name
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)
        record = {"schema": SWEEP_RUN_SCHEMA, "name": spec.name, "index": spec.index, "config": spec.config,
                  "eval_levels": list(spec.eval_levels), "probe_levels": list(spec.probe_levels),
                  "device": self.opts.device, "stages": {}}
        previous = _previous_stages(run_dir)
        t0 = time.perf_counter()
        with self.progress.lock:
            self.progress.running += 1
        try:
            record["state"] = self._stages(spec, run_dir, record, previous)
        finally:
            record["wall_s"] = round(time.perf_counter() - t0, 2)
            atomic_write_json(run_dir / SWEEP_RUN_FILE, record)
            with self.progress.lock:
                self.progress.running -= 1
                if record["state"] in ("done", "diverged"):
                    self.progress.done += 1
                    self.progress.run_seconds.append(record["wall_s"])
                elif record["state"] == "failed":
                    self.progress.done += 1
                    self.progress.failed += 1
            self.say(f"[sweep] {spec.name}: {record['state']} ({_fmt(record['wall_s'])}) | "
                     + self.progress.line(self.opts.jobs))
        return record

    def _stages(self, spec: RunSpec, run_dir: Path, record: dict[str, Any], previous: dict[str, Any]) -> str:
        """Run what is left of train -> eval -> probe; the run's final state."""
        status = run_status(run_dir)
        if weights_lost(spec, run_dir, status):
            # trained elsewhere, records copied without the checkpoint: train again (--resume starts over)
            status = {}
        if status.get("state") != "completed" and status.get("state") != "diverged":
            if not self._stage("train", train_command(spec, run_dir, self.opts, self.grid), run_dir, record):
                return "stopped" if self.stopped.is_set() else self._train_outcome(run_dir)
            status = run_status(run_dir)
        else:
            record["stages"]["train"] = _skipped(previous, "train", f"already {status['state']}")
        if status.get("state") == "diverged":
            return "diverged"
        final_step = status.get("step")
        if eval_is_current(run_dir, spec.eval_levels, final_step):
            record["stages"]["eval"] = _skipped(previous, "eval", "current")
        elif not self._stage("eval", eval_command(spec, run_dir, self.opts, self.grid), run_dir, record):
            return self._after_failure()
        if not spec.probe_levels:
            return "done"
        if probe_is_current(run_dir, spec.probe_levels):
            record["stages"]["probe"] = _skipped(previous, "probe", "current")
        elif not self._stage("probe", probe_command(spec, run_dir, self.opts, self.grid), run_dir, record):
            return self._after_failure()
        return "done"

    def _after_failure(self) -> str:
        """The state of a run whose eval or probe exited nonzero: "stopped" when `interrupt()` ended it
        (the next sweep redoes the stage), else "failed"."""
        return "stopped" if self.interrupted.is_set() else "failed"

    def _train_outcome(self, run_dir: Path) -> str:
        return "diverged" if run_status(run_dir).get("state") == "diverged" else "failed"

    def _stage(self, name: str, cmd: list[str], run_dir: Path, record: dict[str, Any]) -> bool:
        """Run one stage's command (output to RUN/logs/); True when it exited 0."""
        if self.stopped.is_set() and name == "train":
            record["stages"][name] = {"state": "not started (stopped)"}
            return False
        log = run_dir / "logs" / f"{name.replace(' ', '-')}.log"
        t0 = time.perf_counter()
        with open(log, "ab") as fh:
            fh.write(f"\n$ {' '.join(cmd)}\n".encode())
            fh.flush()
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=_child_env(self.opts))
            with self._lock:
                self._procs[proc] = name
            code = proc.wait()
            with self._lock:
                self._procs.pop(proc, None)
        ok = code == 0
        record["stages"][name] = {"state": "ok" if ok else "failed", "exit": code,
                                  "wall_s": round(time.perf_counter() - t0, 2), "log": str(log.relative_to(run_dir)),
                                  "command": cmd[1:]}
        expected = self.interrupted.is_set() or (name == "train" and self.stopped.is_set())  # our own SIGINT
        if not ok and not expected:
            self.say(f"[sweep] {run_dir.name}: {name} exited {code}; last lines of {log}:\n"
                     + _tail(log, 5))
        return ok


def _skipped(previous: dict[str, Any], stage: str, why: str) -> dict[str, Any]:
    """A stage not rerun keeps the record of the sweep that ran it."""
    return {**previous.get(stage, {}), "skipped": why}


def _previous_stages(run_dir: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((run_dir / SWEEP_RUN_FILE).read_text()).get("stages", {}))
    except (OSError, ValueError, AttributeError):
        return {}


def _child_env(opts: SweepOptions) -> dict[str, str]:
    """The stages' environment: ours, unbuffered output, and the data cache for every stage."""
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    if opts.data_cache:
        env["FPSTAB_CACHE"] = opts.data_cache
    return env


def _tail(path: Path, n: int) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in lines[-n:])


def _fmt(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


# ---- the sweep ------------------------------------------------------------------------------
def only_matches(value: Any, text: str) -> bool:
    """Whether a resolved config value is what `--only KEY=TEXT` names: the same text, the same
    number (lr=3e-4 names 0.0003, epochs=16.0 names 16) or the same bool (true/false, any case)."""
    if str(value) == text:
        return True
    if isinstance(value, bool):
        return text.lower() == str(value).lower()
    if isinstance(value, (int, float)):
        try:
            return float(text) == float(value)
        except ValueError:
            return False
    return False


def shard_runs(runs: Sequence[RunSpec], shard: tuple[int, int],
               only: Sequence[tuple[str, str]] = ()) -> list[RunSpec]:
    """Runs i, i+n, i+2n, ... of the grid for shard (i, n), keeping those whose resolved config
    matches `only`: for every key named there, one of its values (`only_matches`)."""
    i, n = shard
    wanted: dict[str, list[str]] = {}
    for key, value in only:
        wanted.setdefault(key, []).append(value)
    return [r for r in runs if r.index % n == i
            and all(any(only_matches(r.config.get(k), v) for v in vs) for k, vs in wanted.items())]


def check_only(runs: Sequence[RunSpec], only: Sequence[tuple[str, str]]) -> None:
    """ValueError when `only` keeps no run of the whole grid, naming the values the grid has for
    each key it filters on (a typo or a combination the grid lacks; a shard of it may be empty)."""
    if not only or shard_runs(runs, (0, 1), only):
        return
    have = {key: sorted({str(r.config.get(key)) for r in runs}) for key, _ in only}
    asked = " ".join(f"--only {k}={v}" for k, v in only)
    raise ValueError(f"{asked}: no run of the grid matches; its runs have "
                     + "; ".join(f"{k} in {vs}" for k, vs in have.items()))


def parse_only(items: Sequence[str]) -> list[tuple[str, str]]:
    """['task=sudoku', ...] -> [('task', 'sudoku'), ...]; keys must be TrainConfig keys."""
    from fpstab.config import FIELDS

    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in FIELDS:
            raise ValueError(f"--only {item!r}: expected KEY=VALUE with KEY a TrainConfig key, e.g. task=sudoku")
        out.append((key, value))
    return out


def sweep(grid: Grid, out: str | Path, opts: SweepOptions, quiet: bool = False) -> int:
    """Run this shard's runs; returns EXIT_OK, EXIT_FAILED (a stage failed) or EXIT_STOPPED."""
    out = Path(out)
    say = (lambda msg: None) if quiet else (lambda msg: print(msg, flush=True))
    runs = shard_runs(grid.runs, opts.shard, opts.only)
    check_conflicts(runs, out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / GRID_FILE, grid.to_dict())
    progress = Progress(total=len(runs))
    runner = Runner(grid, out, opts, progress, say)
    say(f"[sweep] {len(runs)} of {len(grid.runs)} runs (shard {opts.shard[0]}/{opts.shard[1]}), "
        f"{opts.jobs} at once, on {opts.device} -> {out}")
    timer = threading.Timer(opts.stop_after_s, runner.stop) if opts.stop_after_s else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    pool = ThreadPoolExecutor(max_workers=opts.jobs)
    try:
        futures = [pool.submit(runner.run, spec) for spec in runs]
        records = [f.result() for f in futures]
    except KeyboardInterrupt:
        # Ctrl-C or SIGTERM (a scheduler's time limit): runs not started never start, running
        # stages are interrupted (trainings checkpoint), and their records are written before we exit.
        say("[sweep] interrupted: stopping the running stages (trainings checkpoint); rerun to go on")
        runner.interrupt()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=False)
        if timer is not None:
            timer.cancel()
    states = [r["state"] for r in records]
    say(f"[sweep] finished: {states.count('done')} done, {states.count('diverged')} diverged, "
        f"{states.count('failed')} failed, {states.count('stopped')} stopped; records in {out} "
        f"(`fpstab report {out}` reports them and what is left of the grid)")
    if "failed" in states:
        return EXIT_FAILED
    return EXIT_STOPPED if "stopped" in states else EXIT_OK


def dry_run(grid: Grid, out: Path, runs: Sequence[RunSpec]) -> int:
    """Print each run's levels and what the sweep would do next in `out`; EXIT_FAILED when a run
    would be refused (`config_conflict`), else EXIT_OK. Nothing is run or written."""
    refused = 0
    for spec in runs:
        action = next_stage(spec, out / spec.name)
        refused += action.startswith("refused")
        print(f"{spec.index:>3} {spec.name}: next {action}; eval {list(spec.eval_levels)}, "
              f"probe {list(spec.probe_levels)}")
    print(f"[sweep] dry run: {len(runs)} of {len(grid.runs)} runs, {refused} refused -> {out}")
    return EXIT_FAILED if refused else EXIT_OK


# ---- command line ---------------------------------------------------------------------------
def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' -> (i, n) with 0 <= i < n."""
    m = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise ValueError(f"--shard {text!r}: expected i/n with 0 <= i < n, e.g. 0/4")
    return int(m.group(1)), int(m.group(2))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `fpstab sweep`."""
    parser.add_argument("grid", type=Path, help="grid file (TOML; see `fpstab.grid`)")
    parser.add_argument("--out", type=Path, required=True, help="results tree: one directory per run")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (default: 1)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N for every stage (default: cpu)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads per stage (default: 1 on cpu, torch's choice on cuda)")
    parser.add_argument("--shard", default="0/1", help="i/n: run only runs i, i+n, ... (default: 0/1, all)")
    parser.add_argument("--only", action="append", default=[], metavar="KEY=VALUE",
                        help="run only the runs whose config has KEY=VALUE (repeatable: values of one key "
                             "are alternatives, different keys must all match; numbers compare by value, "
                             "lr=3e-4 is 0.0003; a filter that keeps no run is an error)")
    parser.add_argument("--stop-after", type=float, default=None, metavar="SECONDS",
                        help="start no training after this and interrupt running ones (they checkpoint); "
                             "trained runs are still evaluated and probed")
    parser.add_argument("--data-cache", default=None,
                        help="cache folder for generated task data (default $FPSTAB_CACHE or ~/.cache/fpstab)")
    parser.add_argument("--dry-run", action="store_true",
                        help="list the runs and what each would do next in --out, run nothing; exit 1 when a "
                             "run directory there holds a run of another config")
    parser.add_argument("--quiet", action="store_true")


def run(args: argparse.Namespace) -> int:
    """Entry point of `fpstab sweep`."""
    shard = parse_shard(args.shard)
    only = tuple(parse_only(args.only))
    if args.jobs < 1:
        raise ValueError(f"--jobs {args.jobs}: must be >= 1")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads {args.threads}: must be >= 1")
    if args.stop_after is not None and args.stop_after <= 0:
        raise ValueError(f"--stop-after {args.stop_after}: must be > 0 seconds")
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {args.out} exists and is not a directory")
    grid = load_grid(args.grid)
    check_only(grid.runs, only)
    threads = args.threads if args.threads is not None else (1 if args.device == "cpu" else None)
    opts = SweepOptions(device=args.device, threads=threads, data_cache=args.data_cache, jobs=args.jobs,
                        shard=shard, only=only, stop_after_s=args.stop_after)
    if args.dry_run:
        return dry_run(grid, args.out, shard_runs(grid.runs, shard, only))
    if threading.current_thread() is not threading.main_thread():
        return _run_sweep(grid, args, opts)
    previous = signal.signal(signal.SIGTERM, _terminate)
    # A non-interactive shell starts a background job (`fpstab sweep ... &`) with SIGINT ignored, and
    # Python then raises no KeyboardInterrupt: `kill -INT` would be lost, and so would the SIGINT the
    # sweep sends its own stages (they would inherit the ignore). Python's handler is installed
    # instead; a handled signal is reset to the default in the stages the sweep starts.
    previous_int = signal.getsignal(signal.SIGINT)
    if previous_int is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return _run_sweep(grid, args, opts)
    finally:
        signal.signal(signal.SIGTERM, previous)
        if previous_int is signal.SIG_IGN:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_sweep(grid: Grid, args: argparse.Namespace, opts: SweepOptions) -> int:
    try:
        return sweep(grid, args.out, opts, quiet=args.quiet)
    except KeyboardInterrupt:
        return EXIT_STOPPED


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM (e.g. a scheduler's time limit) stops the sweep as Ctrl-C does."""
    raise KeyboardInterrupt
