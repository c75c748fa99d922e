"""The benchmark suite: its parameters and its sections, run in order, each section's
rows kept as they come (`run`)."""

from __future__ import annotations

import collections
import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any, Optional

from benchmarks import device, features, training
from tff_fedpt.options import option
from tff_fedpt.tasks import shakespeare


@dataclasses.dataclass(frozen=True)
class Params:
    """The suite's parameters (scripts/benchmark.py: one flag each)."""

    repeats: int = option(5, "Timed repeats per measurement (medians are reported).")
    memory_rounds: int = option(300, "Rounds of the memory-stability run.")
    output_dir: str = option("output/benchmark", "Where benchmark.json goes.")
    device_steps: int = option(40, "Train steps per device-client measurement.")
    fashion_data_dir: Optional[str] = option(None, "Fashion-MNIST IDX files (default: Debian's).")
    fashion_rounds: int = option(20, "Rounds of each Fashion-MNIST peak-memory run.")
    fashion_num_clients: int = option(1000, "Clients of the Fashion-MNIST split.")
    features_settings: tuple[str, ...] = option(
        ("head", "lora4", "ffa16"), "Settings of the features section (head, lora4, ffa16)."
    )
    features_frozen: tuple[str, ...] = option(
        ("pretrained",),
        "Frozen values of the features section's FedPT runs: pretrained (constants, as the "
        "binaries' --pretrained_weights) and/or seeded (regenerated in every client's call).",
    )
    shakespeare_cache_dir: Optional[str] = option(
        None, "Directory of shakespeare.sqlite (default: TFF's, then `make data`'s)."
    )
    shakespeare_rounds: int = option(5, "Rounds of each Shakespeare peak-memory run.")
    shakespeare_public_plays: tuple[str, ...] = option(
        shakespeare.PUBLIC_PLAYS, "The Shakespeare task's public plays (its default)."
    )
    communication_models: tuple[str, ...] = option(
        tuple(training.MODELS), "Catalog models of the communication section."
    )


SECTIONS: dict[str, Callable[[Params, Callable[[str], None]], Any]] = {
    "communication": training.communication,
    "speed": training.speed,
    "overhead": training.overhead,
    "memory": training.memory,
    "scaling": training.scaling,
    "workers": training.workers,
    "device": device.device_client,
    "device_slim": device.device_slim,
    "fashion": training.fashion,
    "shakespeare": training.shakespeare_rounds,
    "features": features.features_rounds,
}


def machine() -> str:
    import tensorflow as tf

    return f"{os.cpu_count()} CPU cores, {os.uname().machine}, TF {tf.__version__}"


def run(
    params: Params,
    sections: Sequence[str],
    log: Callable[[str], None] = lambda line: None,
    on_section: Callable[[str, dict], None] = lambda name, results: None,
) -> dict:
    """Runs `sections` (in the suite's order) and returns {machine, repeats, section:
    rows}; `log` gets "## name" before each, `on_section(name, results)` after each (e.g.
    to save what is measured so far)."""
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise ValueError(f"sections: unknown {sorted(unknown)}; valid: {list(SECTIONS)}")
    results = collections.OrderedDict(machine=machine(), repeats=params.repeats)
    for name, section in SECTIONS.items():
        if name in sections:
            log(f"\n## {name}")
            results[name] = section(params, log)
            on_section(name, results)
    return results
