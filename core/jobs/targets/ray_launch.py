"""The driver of a Ray job (``python -m core.jobs.targets.ray_launch ...``, the entrypoint RayTarget submits):
one actor per node, each running that node's ranks (core.jobs.targets.base.torchrun_argv) with their output
appended to the run folder's log.

SIGTERM (Ray's stop_job) is passed on to every node's ranks, which stop after their step, keep the last
checkpoint and record the job canceled. When a node's actor dies (the node went away) or its ranks fail, the
other nodes' ranks are killed (they would wait on the lost rank until a collective times out) and the driver
exits non-zero with the reason, which Ray reports as the job's message.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import ray
from ray.util.placement_group import placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from core.jobs.targets.base import LOG_ENV, Launch, torchrun_argv
from core.jobs.targets.ray import FAILED, STARTED, WAITING  # the lines RayTarget.state reads back

WAIT_REPORT_S = 30


@ray.remote(max_concurrency=2)  # type: ignore[call-overload]  # one thread runs the ranks, one signals them
class NodeRanks:
    """One node's share of the run: its torchrun (or the single process) in its own process group."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None

    def address(self) -> str:
        return ray.util.get_node_ip_address()

    def run(self, argv: list[str], log: str, cwd: str) -> int:
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(argv, cwd=cwd, env=dict(os.environ), stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        return self.proc.wait()

    def signal(self, signum: int) -> None:
        """``signum`` to the node's torchrun and every process under it: torchrun starts its ranks in sessions of
        their own, so a signal to its process group alone would leave them running once torchrun is killed."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            top = psutil.Process(self.proc.pid)
            tree = [top, *top.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for proc in tree:
            try:
                proc.send_signal(signum)
            except psutil.NoSuchProcess:
                pass


def _parse(argv: list[str] | None):
    parser = argparse.ArgumentParser(prog="ray_launch", description=__doc__.splitlines()[0])
    for name in ("--run-dir", "--module", "--log"):
        parser.add_argument(name, required=True)
    for name in ("--nodes", "--procs-per-node", "--master-port", "--job-id"):
        parser.add_argument(name, type=int, required=True)
    parser.add_argument("--cpus", type=float, default=1)
    parser.add_argument("--gpus", type=float, default=0)
    parser.add_argument("--resources", type=json.loads, default={}, help="custom Ray resources each node must have")
    return parser.parse_args(argv)


def _wait_for_nodes(group, nodes: int, cpus: float, gpus: float) -> None:
    while True:
        print(f"{WAITING} {nodes} node(s) with {cpus:g} CPU(s) and {gpus:g} GPU(s) each (a Ray placement group: "
              "it waits while the cluster has not got them free).", flush=True)
        ready, _ = ray.wait([group.ready()], timeout=WAIT_REPORT_S)
        if ready:
            return


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    python = sys.executable  # the target's python setting runs this driver; the ranks use the same one
    launch = Launch(job_id=args.job_id, run_dir=Path(args.run_dir), module=args.module, nodes=args.nodes,
                    procs_per_node=args.procs_per_node, env={LOG_ENV: args.log})
    ray.init()
    bundle = {"CPU": args.cpus, **({"GPU": args.gpus} if args.gpus else {}), **args.resources}
    group = placement_group([bundle] * args.nodes, strategy="STRICT_SPREAD" if args.nodes > 1 else "PACK")
    _wait_for_nodes(group, args.nodes, args.cpus, args.gpus)
    actors = [NodeRanks.options(  # type: ignore[attr-defined]  # ray.remote's class wrappernum_cpus=args.cpus, num_gpus=args.gpus, resources=args.resources,
                                scheduling_strategy=PlacementGroupSchedulingStrategy(
                                    group, placement_group_bundle_index=i)).remote() for i in range(args.nodes)]
    master = ray.get(actors[0].address.remote())

    stopping = threading.Event()

    def stop(signum, _frame) -> None:
        # Ray waits RAY_JOB_STOP_WAIT_TIME_S (the target sets the cancel grace) before it kills this driver, and
        # with it the actors and their ranks: until then the ranks finish their step, save and record canceled.
        print(f"Stop requested (signal {signum}): asking every node's ranks to stop after their step.", flush=True)
        stopping.set()
        for actor in actors:
            actor.signal.remote(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    log = str(Path(args.run_dir) / args.log)
    runs = {actors[i].run.remote(torchrun_argv(python, launch, i, master, args.master_port), log, os.getcwd()): i
            for i in range(args.nodes)}
    print(f"{STARTED}{args.nodes} node(s) x {args.procs_per_node} rank(s); the first node is {master}.", flush=True)
    pending = list(runs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1, timeout=1)
        for ref in done:
            node = runs[ref]
            try:
                code = ray.get(ref)
                failure = None if code == 0 else f"node {node}'s ranks exited with code {code}"
            except ray.exceptions.RayError as err:
                failure = f"node {node} was lost ({type(err).__name__}: {str(err).splitlines()[0][:300]})"
            if failure and not stopping.is_set():
                ray.wait([a.signal.remote(signal.SIGKILL) for a in actors], num_returns=len(actors), timeout=5)
                print(f"{FAILED} {failure}. See {log} for the ranks' own output.", flush=True)
                return 1
    return 128 + signal.SIGTERM if stopping.is_set() else 0


if __name__ == "__main__":
    sys.exit(main())
