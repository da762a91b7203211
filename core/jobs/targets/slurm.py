"""A Slurm cluster as a compute target, through its own commands: sbatch, squeue, scontrol, scancel and sinfo.

``submit`` writes the batch script ``<run_dir>/slurm.sbatch`` itself (every value shell-quoted, every #SBATCH line
checked) and hands it to ``sbatch --parsable``. The script starts one task per node with ``srun``; a run of more
than one process starts ``torchrun`` (``python -m torch.distributed.run``) in each task, which rendezvous (c10d) on
the first node of the allocation and start ``procs_per_node`` ranks there; a one-process run starts the module
itself, as the local queue does. Slurm writes the output to ``<run_dir>/slurm-<job id>.out``.

``state`` asks ``squeue`` while the controller lists the job and ``scontrol show job`` after (a finished job stays
there for MinJobAge, 300 s by default); there is no slurmdbd to ask once both have forgotten the job, so the state
is then "unknown" and the queue decides from the worker's own finish row. Every command runs as an argv list with a
time limit, never through a shell.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core.configs import strict_from_dict
from core.errors import InvalidInput, StudioError
from core.jobs.targets.base import Launch, Offer, RemoteState, Target

REPO_ROOT = Path(__file__).resolve().parents[3]
COMMAND_TIMEOUT_S = 20.0
SCRIPT = "slurm.sbatch"
OUTPUT = "slurm-{id}.out"
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
# Slurm's time formats: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS; or UNLIMITED
_TIME = re.compile(r"\d+|\d+:\d{2}|\d+:\d{2}:\d{2}|\d+-\d+(:\d{2}){0,2}|UNLIMITED|INFINITE", re.IGNORECASE)
# An extra sbatch option: --name or --name=value, the value without spaces, quotes or shell syntax
_EXTRA = re.compile(r"--([a-z][a-z0-9\-]*)(=[A-Za-z0-9_.,:=@%+/\-|&\[\]*]+)?")
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Options the script sets itself: an extra line may not contradict them.
OWN_OPTIONS = {"job-name", "partition", "nodes", "ntasks", "ntasks-per-node", "cpus-per-task", "gpus-per-node",
               "time", "account", "chdir", "output", "error", "open-mode", "requeue", "no-requeue", "export",
               "wrap", "array", "parsable"}
# Slurm's job states, as our states; the reason travels with them.
PENDING = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SUSPENDED",
           "STOPPED"}
RUNNING = {"RUNNING", "COMPLETING", "RESIZING", "SIGNALING", "STAGE_OUT"}
FAILED_WORDS = {"FAILED": "the job exited with an error", "NODE_FAIL": "a node of the job failed",
                "TIMEOUT": "the job reached its time limit", "OUT_OF_MEMORY": "the job ran out of memory",
                "BOOT_FAIL": "a node failed to boot", "DEADLINE": "the job reached its deadline",
                "PREEMPTED": "the job was preempted", "SPECIAL_EXIT": "the job ended with a special exit"}
CANCELED = {"CANCELLED", "REVOKED"}


@dataclass
class SlurmSettings:
    """A Slurm target's settings, as an admin registers them."""
    partition: str = ""
    """The partition jobs go to; empty: the cluster's default partition."""
    nodes: int = 1
    """The most nodes one run may take on this target."""
    gpus_per_node: int = 0
    """GPUs each node of a run asks for (--gpus-per-node); 0 on CPU clusters."""
    time_limit: str = "01:00:00"
    """The wall-clock limit of a run (--time): minutes, HH:MM:SS or D-HH:MM:SS. Slurm ends a run past it."""
    account: str = ""
    """The Slurm account to charge (--account); empty: the user's default."""
    extra_sbatch: list[str] = field(default_factory=list)
    """More sbatch options, one per line (--qos=high, --constraint=a100, --exclusive)."""
    python: str = ""
    """The Python on the nodes that has finetune-studio installed; empty: the app's own (a shared venv)."""
    workdir: str = ""
    """The finetune-studio folder on the nodes (the job's working directory); empty: the app's own."""
    slurm_conf: str = ""
    """The cluster's slurm.conf for the client commands (SLURM_CONF); empty: the system's (/etc/slurm)."""
    rdzv_port: int = 0
    """The torchrun rendezvous port on the first node; 0: 29500 plus the job id modulo 1000."""
    same_host: bool = False
    """Every node is this machine (tests): SQLite works, as every process is on one host."""

    def __post_init__(self) -> None:
        for key in ("partition", "account"):
            value = str(getattr(self, key) or "").strip()
            if value and not _NAME.fullmatch(value):
                raise InvalidInput(f"Slurm {key} {value!r}: use letters, digits, '_', '.' or '-' only.")
            setattr(self, key, value)
        self.nodes = _int_in("nodes", self.nodes, 1, 4096)
        self.gpus_per_node = _int_in("GPUs per node", self.gpus_per_node, 0, 64)
        self.rdzv_port = _int_in("rendezvous port", self.rdzv_port, 0, 65535)
        if self.rdzv_port and self.rdzv_port < 1024:
            raise InvalidInput("Slurm rendezvous port: use 1024 to 65535, or 0 for one chosen per job.")
        self.time_limit = str(self.time_limit or "").strip()
        if not _TIME.fullmatch(self.time_limit):
            raise InvalidInput(f"Slurm time limit {self.time_limit!r}: write minutes, HH:MM:SS or D-HH:MM:SS "
                               "(e.g. 01:00:00).")
        self.extra_sbatch = _extra_lines(self.extra_sbatch)
        for key, what in (("python", "Python"), ("workdir", "working folder"), ("slurm_conf", "slurm.conf")):
            value = str(getattr(self, key) or "").strip()
            if value and (not value.startswith("/") or any(c in value for c in "\n\r\0")):
                raise InvalidInput(f"Slurm {what} {value!r}: give an absolute path on the nodes.")
            setattr(self, key, value)
        self.same_host = bool(self.same_host)


def _int_in(what: str, value, low: int, high: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"Slurm {what}: a whole number, not {value!r}.") from None
    if not low <= number <= high:
        raise InvalidInput(f"Slurm {what}: {number} is outside {low} to {high}.")
    return number


def _extra_lines(lines) -> list[str]:
    """Extra sbatch options, one per line ("#SBATCH " optional), each a plain --option[=value]."""
    if isinstance(lines, str):
        lines = lines.splitlines()
    out = []
    for raw in lines or []:
        line = str(raw).strip()
        if line.startswith("#SBATCH"):
            line = line[len("#SBATCH"):].strip()
        if not line:
            continue
        match = _EXTRA.fullmatch(line)
        if match is None:
            raise InvalidInput(f"Extra sbatch line {line!r}: write one option as --name or --name=value, without "
                               "spaces, quotes or shell syntax.")
        if match.group(1) in OWN_OPTIONS:
            raise InvalidInput(f"Extra sbatch line {line!r}: --{match.group(1)} is set by the target itself "
                               "(partition, nodes, GPUs, time limit and account are settings of their own).")
        out.append(line)
    return out


class SlurmError(StudioError):
    """A Slurm command failed; the message carries the command's own error."""


class SlurmTarget(Target):
    """Jobs go through sbatch; state from squeue/scontrol; stop with scancel; the offer from sinfo."""
    kind = "slurm"
    multi_host = True

    def __init__(self, settings: dict):  # independent of what the base keeps: the checked settings are ours
        self.settings = self.check_settings(settings)
        self.opts = SlurmSettings(**self.settings)

    @classmethod
    def check_settings(cls, settings: dict) -> dict:
        return asdict(strict_from_dict(SlurmSettings, dict(settings or {}), "Slurm target"))

    # ---------------------------------------------------------------- commands

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.opts.slurm_conf:
            env["SLURM_CONF"] = self.opts.slurm_conf
        return env

    def _run(self, *argv: str) -> subprocess.CompletedProcess:
        """A Slurm client command (argv list, no shell); SlurmError when it cannot run or reach slurmctld."""
        if self.opts.slurm_conf and not Path(self.opts.slurm_conf).is_file():
            raise SlurmError(f"slurm.conf not found at {self.opts.slurm_conf}: fix the target's slurm_conf setting.")
        try:
            return subprocess.run(list(argv), check=False, env=self._env(), capture_output=True, text=True,
                                  timeout=COMMAND_TIMEOUT_S, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise SlurmError(f"{argv[0]} is not installed on this machine: install Slurm's client commands "
                             "(Debian: slurm-client) and the cluster's slurm.conf and munge key.") from None
        except subprocess.TimeoutExpired:
            raise SlurmError(f"slurmctld not reachable: {argv[0]} got no answer within "
                             f"{COMMAND_TIMEOUT_S:.0f} s.") from None

    @staticmethod
    def _error(proc: subprocess.CompletedProcess) -> str:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
        return "; ".join(lines[-2:]) or f"exit code {proc.returncode}"

    # ---------------------------------------------------------------- offer

    def offer(self) -> Offer:
        """Nodes, CPUs and GPUs of the target's partition (``sinfo``), counting nodes that are not down, drained
        or failing; unreachable with the command's own error."""
        argv = ["sinfo", "-h", "-N", "-o", "%N|%c|%G|%t"] + (["-p", self.opts.partition] if self.opts.partition
                                                             else [])
        try:
            proc = self._run(*argv)
        except SlurmError as err:
            return Offer(reachable=False, reason=str(err))
        if proc.returncode != 0:
            return Offer(reachable=False, reason=f"slurmctld not reachable: {self._error(proc)}")
        nodes: dict[str, tuple[int, int]] = {}
        for line in proc.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) != 4 or parts[3].rstrip("*~#%$@^-!") in ("down", "drain", "drng", "fail", "failg",
                                                                   "unk", "boot", "maint", "inval"):
                continue
            nodes[parts[0]] = (_int(parts[1]), gpus_of(parts[2]))
        if not proc.stdout.strip():
            where = f"partition {self.opts.partition!r}" if self.opts.partition else "the cluster"
            return Offer(reachable=False, reason=f"Slurm lists no nodes in {where}: check the partition's name "
                                                 "(sinfo lists the partitions).")
        if not nodes:
            return Offer(reachable=True, reason="Every node of the partition is down or drained (sinfo -R says why).")
        return Offer(reachable=True, nodes=len(nodes), cpus=sum(c for c, _ in nodes.values()),
                     gpus=sum(g for _, g in nodes.values()))

    # ---------------------------------------------------------------- submit

    def batch_script(self, launch: Launch) -> str:
        """The batch script of ``launch``: #SBATCH lines from the settings, the Launch env exported (quoted), one
        srun task per node running torchrun (several processes) or the module (one)."""
        opts = self.opts
        nodes, procs = int(launch.nodes), int(launch.procs_per_node)
        if not 1 <= nodes <= opts.nodes:
            raise InvalidInput(f"This Slurm target runs at most {opts.nodes} node(s) per run, not {nodes}.")
        if procs < 1 or (opts.gpus_per_node and procs > opts.gpus_per_node):
            raise InvalidInput(f"{procs} processes per node do not fit: each node has {opts.gpus_per_node} "
                               "GPU(s) on this target, one per process.")
        if not re.fullmatch(r"[A-Za-z_][\w.]*", launch.module or ""):
            raise InvalidInput(f"Not a Python module name: {launch.module!r}.")
        run_dir = Path(launch.run_dir).resolve()
        python = opts.python or sys.executable
        sbatch = [f"--job-name=fts-{int(launch.job_id)}", f"--nodes={nodes}", "--ntasks-per-node=1",
                  f"--cpus-per-task={procs}", f"--time={opts.time_limit}", f"--chdir={opts.workdir or REPO_ROOT}",
                  f"--output={run_dir / OUTPUT.format(id='%j')}", "--open-mode=append",
                  # a node that dies fails the run (NODE_FAIL) instead of starting it again from the top
                  "--no-requeue"]
        if opts.partition:
            sbatch.append(f"--partition={opts.partition}")
        if opts.account:
            sbatch.append(f"--account={opts.account}")
        if opts.gpus_per_node:
            sbatch.append(f"--gpus-per-node={opts.gpus_per_node}")
        sbatch += opts.extra_sbatch
        for line in sbatch:  # sbatch reads these itself: a newline or quote would start another line or option
            if any(c in line for c in "\n\r\"'\0") or " " in line:
                raise InvalidInput(f"Cannot write the sbatch option {line!r}: paths with spaces or quotes do not "
                                   "work in #SBATCH lines; move the run folder or the code.")
        env = {"PYTHONUNBUFFERED": "1", **{str(k): str(v) for k, v in launch.env.items()}}
        bad = [k for k in env if not _ENV_KEY.fullmatch(k)]
        if bad:
            raise InvalidInput(f"Not an environment variable name: {bad[0]!r}.")
        q = shlex.quote
        lines = ["#!/bin/bash"] + [f"#SBATCH {line}" for line in sbatch]
        lines += [f"# finetune-studio run {int(launch.job_id)}: {nodes} node(s) x {procs} process(es)", "set -eu"]
        lines += [f"export {key}={q(value)}" for key, value in sorted(env.items())]
        srun = ["srun", "--nodes=$SLURM_NNODES", "--ntasks-per-node=1", "--kill-on-bad-exit=1", q(python)]
        work = ["-m", q(launch.module), "--run-dir", q(str(run_dir))]
        if nodes * procs == 1:
            lines.append(" ".join(["exec", *srun, *work]))
        else:
            port = str(opts.rdzv_port) if opts.rdzv_port else "$((29500 + SLURM_JOB_ID % 1000))"
            lines += [
                "# the rendezvous is on the first node of the allocation, at the address Slurm knows it by",
                'head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
                'head_addr=$(sinfo -h -N -n "$head_node" -o %o | head -n 1)',
                f"rdzv_port={port}",
                " ".join(["exec", *srun, "-m", "torch.distributed.run", "--nnodes", "$SLURM_NNODES",
                          "--nproc_per_node", str(procs), "--rdzv_backend", "c10d", "--rdzv_endpoint",
                          '"${head_addr:-$head_node}:$rdzv_port"', "--rdzv_id", '"$SLURM_JOB_ID"', *work]),
            ]
        return "\n".join(lines) + "\n"

    def submit(self, launch: Launch) -> str:
        """Write ``<run_dir>/slurm.sbatch`` (owner-only: it holds the database URL) and ``sbatch --parsable`` it;
        the Slurm job id."""
        script = Path(launch.run_dir) / SCRIPT
        text = self.batch_script(launch)
        try:
            fd = os.open(script, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as err:
            raise InvalidInput(f"Cannot write the batch script {script}: {err.strerror}.") from None
        proc = self._run("sbatch", "--parsable", str(script))
        if proc.returncode != 0:
            raise SlurmError(f"sbatch refused the run: {self._error(proc)}")
        job_id = proc.stdout.strip().split(";")[0]  # "<id>" or "<id>;<cluster>"
        if not job_id.isdigit():
            raise SlurmError(f"sbatch answered {proc.stdout.strip()!r} instead of a job id.")
        return job_id

    # ---------------------------------------------------------------- state, logs, stop

    def state(self, external_id: str) -> RemoteState:
        """From squeue while it lists the job, else scontrol; "unknown" when both have forgotten it or slurmctld
        does not answer (the reason says which)."""
        job_id = _job_id(external_id)
        try:
            proc = self._run("squeue", "-h", "-j", job_id, "-o", "%T|%r")
            line = proc.stdout.strip().splitlines()[0] if proc.returncode == 0 and proc.stdout.strip() else ""
            if line:
                native, _, reason = line.partition("|")
                return map_state(native, reason)
            proc = self._run("scontrol", "show", "job", "-o", job_id)
        except SlurmError as err:
            return RemoteState("unknown", reason=str(err))
        if proc.returncode != 0:
            error = self._error(proc)
            if "invalid job id" in error.lower():
                return RemoteState("unknown", reason=f"Slurm no longer knows job {job_id} ({error}).")
            return RemoteState("unknown", reason=f"slurmctld not reachable: {error}")
        fields = scontrol_fields(proc.stdout)
        return map_state(fields.get("JobState", ""), fields.get("Reason", ""), fields.get("ExitCode", ""))

    def logs(self, external_id: str, tail: int = 200) -> str:
        """The last ``tail`` lines of the job's output file (scontrol's StdOut while the controller knows the
        job, else ``slurm-<id>.out`` in the workspace's run folders)."""
        path = self._output_path(_job_id(external_id))
        if path is None or not path.is_file():
            return ""
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 256 * 1024))
            lines = fh.read().decode("utf-8", errors="replace").splitlines()
        return "\n".join(lines[-tail:])

    def _output_path(self, job_id: str) -> Path | None:
        try:
            proc = self._run("scontrol", "show", "job", "-o", job_id)
            if proc.returncode == 0:
                out = scontrol_fields(proc.stdout).get("StdOut", "")
                if out:
                    return Path(out)
        except SlurmError:
            pass
        from core.workspace import runs_dir

        found = sorted(runs_dir().glob(f"*/{OUTPUT.format(id=job_id)}"), key=lambda p: p.stat().st_mtime)
        return found[-1] if found else None

    def stop(self, external_id: str) -> None:
        """``scancel``: Slurm sends SIGTERM to every task (the worker saves and stops), SIGKILL after KillWait. A job
        Slurm has finished or forgotten is already stopped; an unreachable controller raises SlurmError."""
        proc = self._run("scancel", _job_id(external_id))
        error = self._error(proc).lower() if proc.returncode != 0 else ""
        if error and "invalid job id" not in error and "already" not in error:  # a job gone is stopped
            raise SlurmError(f"scancel failed: {self._error(proc)}")


def _job_id(external_id) -> str:
    job_id = str(external_id or "").strip()
    if not re.fullmatch(r"\d+(_\d+)?", job_id):
        raise InvalidInput(f"Not a Slurm job id: {external_id!r}.")
    return job_id


def _int(text: str) -> int:
    match = re.match(r"\d+", text.strip())
    return int(match.group()) if match else 0


def gpus_of(gres: str) -> int:
    """GPUs in a sinfo %G field: "gpu:4", "gpu:a100:4(S:0-1)", "gpu:2,mps:100" -> 4, 4, 2; "(null)" -> 0."""
    total = 0
    for item in re.split(r",(?![^()]*\))", gres or ""):
        parts = re.sub(r"\(.*\)", "", item).split(":")
        if parts[0] == "gpu" and len(parts) >= 2:
            total += _int(parts[-1]) if parts[-1].strip()[:1].isdigit() else 1
    return total


def scontrol_fields(text: str) -> dict[str, str]:
    """``Key=Value`` pairs of ``scontrol show job -o`` (one line; values without spaces, except the last ones)."""
    out: dict[str, str] = {}
    for token in text.split():
        key, eq, value = token.partition("=")
        if eq and key not in out:
            out[key] = value
    return out


def map_state(native: str, reason: str = "", exit_code: str = "") -> RemoteState:
    """A Slurm job state (with its reason and ExitCode "status:signal") as ours."""
    native = (native or "").strip().upper().split()[0] if (native or "").strip() else ""
    native = native.rstrip("+")  # "CANCELLED+" in some outputs
    reason = (reason or "").strip()
    reason = "" if reason in ("None", "(null)") else reason
    if native in PENDING:
        return RemoteState("pending", reason=reason if reason or native == "PENDING" else native.lower(), native=native)
    if native in RUNNING:
        return RemoteState("running", reason=reason, native=native)
    if native == "COMPLETED":
        return RemoteState("succeeded", native=native)
    if native in CANCELED:
        return RemoteState("canceled", reason=reason or "canceled in Slurm (scancel)", native=native)
    if native in FAILED_WORDS:
        words = [FAILED_WORDS[native] + f" ({native})"]
        if reason and reason != "NonZeroExitCode":
            words.append(f"Slurm's reason: {reason}")
        status, _, sig = (exit_code or "").partition(":")
        if status.isdigit() and int(status):
            words.append(f"exit code {status}")
        if sig.isdigit() and int(sig):
            words.append(f"killed by signal {sig}")
        return RemoteState("failed", reason="; ".join(words), native=native)
    return RemoteState("unknown", reason=f"Slurm state {native or '(none)'}", native=native)
