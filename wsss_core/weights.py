"""Which pretrained weights a network really starts from: one decision for both paths.

Asked-for weights are load-tested here, once per run, before any stage's key is made,
so the key and the records say what was used. When pretrained weights cannot be had
(no network), the network falls back loudly: to the pipeline's own trained CAM
classifier where the caller offers one (GraphNet's features), else to random init.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsss_core.errors import BadInputError

logger = logging.getLogger(__name__)

NO_WEIGHTS = ("none", "")


def no_weights(weights: str | None) -> bool:
    return weights is None or str(weights).strip().lower() in NO_WEIGHTS


@dataclass(frozen=True)
class WeightsChoice:
    """What a network is built from: ``build_backbone(backbone, weights)``.

    weights: "none", a torchvision weights name, or a checkpoint path. requested_* and
    note record what was asked for and why this was used; the note is stable text (stage
    keys hash it), the fetch error itself is logged.
    """

    network: str
    backbone: str
    weights: str
    requested_backbone: str
    requested: str | None
    note: str
    fallback: bool = False

    def record(self) -> dict[str, Any]:
        """The readable record logged with runs: backbone, requested, used, note, fallback."""
        return {
            "backbone": self.backbone, "requested": self.requested, "used": self.weights, "note": self.note,
            "fallback": self.fallback,
        }


def resolve_pretrained(
    network: str, backbone: str, weights: str | None, fallback_checkpoint: str | Path | None = None
) -> WeightsChoice:
    """Load-test the requested weights; fall back loudly when they cannot be had.

    None / "none": random init, as asked. A torchvision weights name that cannot be
    loaded: the checkpoint at ``fallback_checkpoint`` when it exists (its backbone
    replaces the requested one), else random init; both with a warning. A checkpoint
    path that cannot be read is an error, not a fallback.
    """
    from wsss_core.backbones import resolve_weights

    requested = None if weights is None else str(weights)
    if no_weights(requested):
        return WeightsChoice(network, backbone, "none", backbone, requested, "random init requested")
    state_dict, record = resolve_weights(backbone, requested)
    if state_dict is not None:
        return WeightsChoice(network, backbone, requested, backbone, requested, f"{record.used}: {record.reason}")
    checkpoint = Path(fallback_checkpoint) if fallback_checkpoint is not None else None
    if checkpoint is not None and checkpoint.is_file():
        from wsss_core.backbones import file_sha256

        used_backbone = checkpoint_backbone(checkpoint)
        note = (
            f"pretrained weights {requested!r} of {backbone} could not be loaded (offline?); using the "
            f"pipeline's trained checkpoint {checkpoint} ({used_backbone}, sha256 {file_sha256(checkpoint)[:16]})"
        )
        choice = WeightsChoice(network, used_backbone, str(checkpoint), backbone, requested, note, fallback=True)
    else:
        note = (
            f"pretrained weights {requested!r} of {backbone} could not be loaded (offline?); "
            f"the {network} network starts from RANDOM INIT"
        )
        choice = WeightsChoice(network, backbone, "none", backbone, requested, note, fallback=True)
    logger.log(fallback_level(), note)  # the flow also says it on the console, once
    return choice


def offline_said() -> bool:
    """True once this process said that pretrained weights cannot be downloaded (no network:
    wsss_core.backbones.OFFLINE_MESSAGE); a fallback that follows from it is then no news."""
    from wsss_core.backbones import offline

    return offline()


def fallback_level() -> int:
    """The log level of a weights fallback: a warning, unless it follows from the missing network
    this process already warned about once (then INFO: each run still records the fallback)."""
    return logging.INFO if offline_said() else logging.WARNING


def pretrained_loads(backbone: str, weights: str | None) -> tuple[bool, str]:
    """(True, note) when the requested pretrained weights can be loaded here; never warns."""
    from wsss_core.backbones import resolve_weights

    if no_weights(weights):
        return False, "no pretrained weights requested"
    state_dict, record = resolve_weights(backbone, weights)
    if state_dict is not None:
        return True, f"{record.used}: {record.reason}"
    reason = "no network" if offline_said() and record.used == "none" else record.reason
    return False, f"pretrained weights {weights!r} of {backbone} could not be loaded ({reason})"


def checkpoint_backbone(path: Path) -> str:
    """The backbone name a wsss training checkpoint (CamNet, AffinityNet) was built with."""
    from wsss_core.training import read_checkpoint

    meta = read_checkpoint(path).get("meta", {})
    name = meta.get("backbone")
    if not name:
        raise BadInputError(path, "checkpoint names no backbone in its meta data")
    return str(name)
