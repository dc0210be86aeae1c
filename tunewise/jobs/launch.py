"""Several processes: `tunewise train --nproc N` starts itself again under a launcher, as LLaMA-Factory does.

torchrun (DDP, the default) or, when the config names an Accelerate config file, `accelerate launch
--config_file` (FSDP2, DeepSpeed ZeRO). Each process then runs the same command; Accelerate reads
the launcher's environment and the training loop splits every batch between the processes
(`training.steps`). A command already under a launcher (torchrun, `accelerate launch`, or this one)
runs as it is: `accelerate launch -m tunewise train ...` and plain `torchrun -m tunewise train ...`
work too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tunewise.errors import ConfigError

LAUNCHED = "TUNEWISE_LAUNCHED"  # set in the children, so they never launch again
LAUNCHER_VARIABLES = ("LOCAL_RANK", "TORCHELASTIC_RUN_ID", LAUNCHED)
LAUNCH = [sys.executable, "-m", "tunewise.jobs.launch"]  # `main` below: the launcher, without its traceback


@dataclass(frozen=True)
class Processes:
    """Where the processes run: per machine, how many machines, and which one this is."""

    per_node: int = 1
    nodes: int = 1
    node_rank: int = 0
    master_addr: str | None = None
    master_port: int = 29500

    def __post_init__(self) -> None:
        if self.per_node < 1 or self.nodes < 1:
            raise ConfigError("--nproc and --nnodes must be at least 1.")
        if not 0 <= self.node_rank < self.nodes:
            raise ConfigError(f"--node-rank must be between 0 and {self.nodes - 1} (--nnodes {self.nodes}).")
        if self.nodes > 1 and not self.master_addr:
            raise ConfigError("Several machines need --master-addr: the address of the machine with --node-rank 0.")

    @property
    def several(self) -> bool:
        return self.per_node * self.nodes > 1


def already_launched() -> bool:
    """Under torchrun, `accelerate launch` or a relaunch by tunewise: run the command itself."""
    return any(name in os.environ for name in LAUNCHER_VARIABLES)


def needs_launcher(processes: Processes, accelerate_config: str | None) -> bool:
    return not already_launched() and (processes.several or accelerate_config is not None)


def launcher_command(arguments: list[str], processes: Processes, accelerate_config: str | None) -> list[str]:
    """The command line that runs `python -m tunewise <arguments>` in every process."""
    module = ["-m", "tunewise", *arguments]
    if accelerate_config is not None:
        return [*LAUNCH, "accelerate", *_accelerate_options(processes, accelerate_config), *module]
    if processes.nodes == 1:  # one machine: torchrun picks a free port itself
        where = ["--standalone", "--nnodes", "1"]
    else:
        where = [
            "--nnodes", str(processes.nodes), "--node_rank", str(processes.node_rank),
            "--master_addr", str(processes.master_addr), "--master_port", str(processes.master_port),
        ]  # fmt: skip
    return [*LAUNCH, "torchrun", "--nproc_per_node", str(processes.per_node), *where, *module]


def _accelerate_options(processes: Processes, config_file: str) -> list[str]:
    if not Path(config_file).is_file():
        raise ConfigError(
            f"train.accelerate_config: {config_file} is not a file. Write one with `accelerate config --config_file "
            f"{config_file}`, or start from examples/accelerate/fsdp2.yaml or zero2.yaml."
        )
    options = ["--config_file", config_file]
    if processes.several:  # otherwise the file's own num_processes and machines stand
        options += [
            "--num_processes", str(processes.per_node * processes.nodes), "--num_machines", str(processes.nodes),
            "--machine_rank", str(processes.node_rank), "--main_process_port", str(processes.master_port),
        ]  # fmt: skip
        if processes.master_addr:
            options += ["--main_process_ip", processes.master_addr]
    return options


# Accelerate's distributed types whose training state is sharded across processes
SHARDED_TYPES = {"FSDP": "FSDP", "DEEPSPEED": "DeepSpeed", "MEGATRON_LM": "Megatron-LM"}


def refuse_sharded_training(distributed_type: str) -> None:
    """Stop before any work when Accelerate would shard the training state (FSDP, DeepSpeed ZeRO).

    tunewise's checkpoints, best weights and saved model are written by the first process from its own
    copy of the weights and optimizer state, and each process evaluates its own share of batches: right
    for DDP, where every process holds everything, and wrong for sharded training, where the first
    process holds a shard and every forward is a collective (a checkpoint would miss the other shards, an
    evaluation would wait forever). Until checkpoints gather the shards, a sharded run is refused rather
    than left to lose its state or hang."""
    name = SHARDED_TYPES.get(distributed_type)
    if name is not None:
        raise ConfigError(
            f"train.accelerate_config asks for {name}, which shards the training state across processes; tunewise "
            "cannot yet checkpoint or evaluate sharded training, so it would lose state or hang. Use DDP: remove "
            "train.accelerate_config and run with --nproc N (each GPU then holds the whole model; LoRA "
            "(strategy.method: lora) keeps that small), or set distributed_type: MULTI_GPU in the file."
        )


def launcher_environment() -> dict[str, str]:
    return {**os.environ, LAUNCHED: "1"}


# exit codes of a training process that a signal stopped after its checkpoint (errors.Stopped): 128 + SIGINT, SIGTERM
STOPPED_CODES = (128 + signal.SIGINT, 128 + signal.SIGTERM)


def run_launcher(command: list[str], env: dict[str, str]) -> int:
    """Run the launcher and return its exit status (128 + N when a signal N ended it). A terminal's Ctrl-C reaches
    the launcher and every training process itself (they share the terminal's process group), so this process
    ignores it and waits; a SIGTERM sent to this process alone (a scheduler's, to the job's first process) is
    passed on to the launcher, which passes it on to every training process (training.preemption)."""
    process = subprocess.Popen(command, env=env)

    def forward(number: int, frame: object) -> None:
        process.send_signal(number)

    previous = {signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN)}
    previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, forward)
    try:
        code = process.wait()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    return 128 - code if code < 0 else code


def main(argv: list[str]) -> int:
    """Run torchrun or `accelerate launch` with ARGV[1:]. A process that fails has printed its message
    already; the launcher's own traceback (ChildFailedError, with a table of exit codes) is replaced by
    one line and the exit status 1. Processes a signal stopped after their checkpoint (errors.Stopped)
    said how to resume: their status (128 + the signal) is the launcher's, without that line."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    launcher, options = argv[0], argv[1:]
    try:
        if launcher == "torchrun":
            from torch.distributed.run import main as torchrun

            torchrun(options)
        else:
            from accelerate.commands.launch import launch_command, launch_command_parser

            launch_command(launch_command_parser().parse_args(options))
    except SignalException as stopping:  # the launcher's own SIGTERM: it has passed it on and waited for them
        return 128 + int(stopping.sigval)
    except (ChildFailedError, subprocess.CalledProcessError) as failure:
        failed = sorted(failure.failures) if isinstance(failure, ChildFailedError) else []
        if isinstance(failure, ChildFailedError):
            codes = {process.exitcode for process in failure.failures.values()}
        else:
            codes = {failure.returncode}
        if codes and codes <= set(STOPPED_CODES):  # stopped by a signal with a checkpoint: each said how to resume
            return max(codes)
        which = f"process {', '.join(map(str, failed))}" if failed else "a process"
        print(f"tunewise: {which} of the run stopped with an error (its message is above); the others were stopped.",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
