"""Which pretrained weights a network really starts from: one decision for every network.

Two layers, both here. State dicts: ``resolve_weights`` finds the weights a name asks for
(random init, a torchvision weights name fetched once into torch's hub cache, or a file),
and a network without a connection is said once per process (``offline``). The decision:
asked-for weights are load-tested here (``resolve_pretrained``), once per run, before any
stage's key is made, so the key and the records say what was used. When pretrained weights
cannot be had (no network), the network falls back loudly: to the pipeline's own trained
CAM classifier where the caller offers one (GraphNet's features, the segmentation rounds),
else to random init. wsss_core.backbones builds networks from what this module resolves.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wsss_core.data.fingerprints import file_sha256
from wsss_core.errors import BadInputError
from wsss_core.registries import BACKBONES

if TYPE_CHECKING:  # torch is imported where weights are loaded: deciding that none can be had needs no torch
    import torch
    import torchvision

logger = logging.getLogger(__name__)

NO_WEIGHTS = ("none", "")


def no_weights(weights: str | None) -> bool:
    return weights is None or str(weights).strip().lower() in NO_WEIGHTS


# ----------------------------------------------------------------------------- state dicts


@dataclass(frozen=True)
class WeightsRecord:
    """What weights were asked for, what was used, and why (goes into run configs)."""

    requested: str | None
    used: str
    reason: str


def resolve_weights(
    name: str, weights: str | Path | None
) -> tuple[dict[str, torch.Tensor] | None, WeightsRecord]:
    """Find the state dict for ``weights`` of the network ``name``: a backbone of BACKBONES, or
    any torchvision classification network (the segmentation rounds' MobileNetV3).

    ``weights``: None / "none" (random init); a torchvision weights name of this
    backbone ("DEFAULT", "IMAGENET1K_V1", ...), which falls back to random init with a
    loud warning when it cannot be had (no network); or a local checkpoint path, where a
    missing or unreadable file is an error.
    """
    if name not in BACKBONES and _torchvision_weights_enum(name) is None:
        BACKBONES.check(name)  # neither ours nor torchvision's: refused, naming ours
    requested = None if weights is None else str(weights)
    if no_weights(requested):
        return None, WeightsRecord(requested, "none", "random init requested")
    enum = _torchvision_weights_enum(name)
    if enum is not None and requested in enum.__members__:
        _remember_download(name, requested, enum[requested])
        return _torchvision_state_dict(enum[requested], requested)
    path = Path(requested)
    if not path.is_file():
        known = sorted(enum.__members__) if enum is not None else []
        problem = "weights file not found" if not path.exists() else "weights path is not a file"
        raise BadInputError(path, f"{problem} (nor a torchvision weights name of {name}: {known})")
    record = WeightsRecord(requested, str(path), f"loaded file, sha256 {file_sha256(path)[:16]}")
    return _file_state_dict(path), record


def _torchvision_weights_enum(name: str) -> type | None:
    import torchvision  # here, not at the top: importing it loads torch._dynamo (~1.5 s per command)
    try:
        return torchvision.models.get_model_weights(name)
    except ValueError:
        return None


# Downloads that failed for want of a network, in this process: {hub cache file: the error}.
# Tried once per file (a missing network fails every time, some only after a timeout) and said
# once per process (OFFLINE_MESSAGE), not once per network and run: each choice records it anyway.
_UNREACHABLE: dict[str, str] = {}


OFFLINE_MESSAGE = "no pretrained weights (no network): networks train from random init"


def offline() -> bool:
    """True once a download of pretrained weights failed for want of a network in this process
    (and OFFLINE_MESSAGE was said); the fallbacks that follow need not say it again."""
    return bool(_UNREACHABLE)


def _network_error(error: BaseException) -> bool:
    import http.client
    import urllib.error

    return isinstance(error, (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException))


def _hub_dir() -> Path:
    """torch.hub.get_dir(): torch's own answer once torch is loaded (torch.hub.set_dir may have moved
    it), else the rule torch documents, $TORCH_HOME/hub, $TORCH_HOME defaulting to
    $XDG_CACHE_HOME/torch and that to ~/.cache/torch."""
    if "torch" in sys.modules:
        return Path(sys.modules["torch"].hub.get_dir())
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(os.path.expanduser(os.environ.get("TORCH_HOME") or os.path.join(cache, "torch"))) / "hub"


def _hub_file(url: str) -> Path:
    """Where torch.hub keeps (and looks for) a downloaded checkpoint."""
    from urllib.parse import urlparse

    return _hub_dir() / "checkpoints" / Path(urlparse(url).path).name


def _say_unreachable(cached: Path, weights_class: str, member: str, error: BaseException, message: str) -> None:
    """Note that a download failed for want of a network: OFFLINE_MESSAGE the first time in this
    process, the fallback's own message at INFO after that."""
    first = not _UNREACHABLE
    _UNREACHABLE.setdefault(str(cached), f"{type(error).__name__}: {error}")
    if first:
        logger.warning("%s (torchvision could not download %s weights %s: %s)", OFFLINE_MESSAGE,
                       weights_class.removesuffix("_Weights").lower(), member, error)
    else:
        logger.info(message)


def _torchvision_state_dict(
    member: torchvision.models.WeightsEnum, requested: str
) -> tuple[dict[str, torch.Tensor] | None, WeightsRecord]:
    import torch

    cached = _hub_file(member.url)
    try:
        if not cached.exists():  # fetched here, without torch.hub's "Downloading: ..." line before a failure
            if str(cached) in _UNREACHABLE:
                raise ConnectionError(_UNREACHABLE[str(cached)])
            logger.info("downloading %s to %s", member.url, cached)
            cached.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(member.url, str(cached), progress=False)
        state_dict = member.get_state_dict(progress=False)
    except Exception as exc:  # any failure to fetch (network, cache, hash) must not stop a run
        message = (
            f"could not load torchvision weights {member.name} ({type(exc).__name__}: {exc}); "
            "falling back to RANDOM INIT: features and CAMs will be far weaker"
        )
        if _network_error(exc):
            _say_unreachable(cached, member.__class__.__name__, member.name, exc, message)
        else:  # a damaged cache file, a hash mismatch: a real problem, said every time
            logger.warning(message)
            warnings.warn(message, RuntimeWarning, stacklevel=3)
        return None, WeightsRecord(requested, "none", message)
    return dict(state_dict), WeightsRecord(requested, f"torchvision:{member.name}", "loaded")


def _file_state_dict(path: Path) -> dict[str, torch.Tensor]:
    import torch

    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BadInputError(path, f"cannot read weights ({type(exc).__name__}: {exc})") from exc
    state_dict = _unwrap_state_dict(loaded)
    if state_dict is None:
        raise BadInputError(path, "not a state dict (nor a checkpoint with a 'model' or 'state_dict' entry)")
    return state_dict


def _unwrap_state_dict(loaded: object) -> dict[str, torch.Tensor] | None:
    """A plain state dict, from a state dict or a training checkpoint; prefixes removed."""
    import torch

    if not isinstance(loaded, Mapping):
        return None
    for key in ("model", "state_dict"):
        if isinstance(loaded.get(key), Mapping):
            loaded = loaded[key]
            break
    tensors = {str(k): v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        return None
    tensors = {k.removeprefix("module."): v for k, v in tensors.items()}
    # A whole CamNet / AffinityNet state dict: keep its backbone part.
    if any(k.startswith("backbone.") for k in tensors):
        tensors = {k.removeprefix("backbone."): v for k, v in tensors.items() if k.startswith("backbone.")}
    return tensors


# ----------------------------------------------------------------------------- the decision


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
    requested = None if weights is None else str(weights)
    if no_weights(requested):
        return WeightsChoice(network, backbone, "none", backbone, requested, "random init requested")
    state_dict, record = resolve_weights(backbone, requested)
    if state_dict is not None:
        return WeightsChoice(network, backbone, requested, backbone, requested, f"{record.used}: {record.reason}")
    checkpoint = Path(fallback_checkpoint) if fallback_checkpoint is not None else None
    if checkpoint is not None and checkpoint.is_file():
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
    OFFLINE_MESSAGE); a fallback that follows from it is then no news."""
    return offline()


def fallback_level() -> int:
    """The log level of a weights fallback: a warning, unless it follows from the missing network
    this process already warned about once (then INFO: each run still records the fallback)."""
    return logging.INFO if offline_said() else logging.WARNING


def pretrained_loads(backbone: str, weights: str | None) -> tuple[bool, str]:
    """(True, note) when the requested pretrained weights can be loaded here; never warns."""
    if no_weights(weights):
        return False, "no pretrained weights requested"
    if _unreachable_without_torchvision(backbone, str(weights)):
        return False, f"pretrained weights {weights!r} of {backbone} could not be loaded (no network)"
    state_dict, record = resolve_weights(backbone, weights)
    if state_dict is not None:
        return True, f"{record.used}: {record.reason}"
    reason = "no network" if offline_said() and record.used == "none" else record.reason
    return False, f"pretrained weights {weights!r} of {backbone} could not be loaded ({reason})"


def checkpoint_backbone(path: Path) -> str:
    """The backbone name a wsss training checkpoint (CamNet, AffinityNet) was built with."""
    from wsss_core.checkpoints import read_checkpoint

    meta = read_checkpoint(path).get("meta", {})
    name = meta.get("backbone")
    if not name:
        raise BadInputError(path, "checkpoint names no backbone in its meta data")
    return str(name)


# ----------------------------------------------------------------------------- no weights, without torch

# Start-up time: finding that torchvision weights cannot be had (none in torch's hub cache and no
# network) imported torchvision, and with it torch: ~3 s of every command that resolves an `auto`
# preset on the 2-core machine, also of one that finds nothing to do. A weights name's download is
# fixed for one torchvision version, so each lookup keeps it (its URL, weights class and member)
# in a small table beside torch's hub cache, and later processes decide from there; weights that
# are cached or reachable still go the whole way (resolve_weights).
DOWNLOADS_FILE = "wsss-torchvision-weights.json"
PROBE_TIMEOUT_S = 10.0


def _torchvision_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torchvision")
    except PackageNotFoundError:
        return None


def _remember_download(name: str, requested: str, member: Any) -> None:
    """Keep where torchvision downloads weights `requested` of network `name` (see DOWNLOADS_FILE)."""
    key = f"{_torchvision_version()}:{name}:{requested}"
    entry = {"url": member.url, "weights_class": member.__class__.__name__, "member": member.name}
    path = _hub_dir() / DOWNLOADS_FILE
    table = _read_downloads(path)
    if table.get(key) == entry:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps({**table, key: entry}, indent=1, sort_keys=True))
        os.replace(partial, path)  # whole or not at all, for processes reading it at the same time
    except OSError:
        pass  # a read-only cache: the next process looks the weights up in torchvision again


def _read_downloads(path: Path) -> dict[str, Any]:
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return table if isinstance(table, dict) else {}


def _unreachable_without_torchvision(name: str, requested: str) -> bool:
    """True when an earlier lookup's download of these weights is not in torch's hub cache and
    cannot be fetched for want of a network (said as resolve_weights says it); False when the
    download is unknown here, cached, or reachable: resolve_weights then decides."""
    from urllib.error import HTTPError
    from urllib.parse import urlparse
    from urllib.request import Request, urlopen

    version = _torchvision_version()
    entry = _read_downloads(_hub_dir() / DOWNLOADS_FILE).get(f"{version}:{name}:{requested}")
    if version is None or not isinstance(entry, dict) or not {"url", "weights_class", "member"} <= entry.keys():
        return False
    cached = _hub_dir() / "checkpoints" / Path(urlparse(entry["url"]).path).name
    if cached.exists():
        return False
    if str(cached) in _UNREACHABLE:
        return True
    try:  # what torch.hub's download would meet first
        with urlopen(Request(entry["url"], method="HEAD", headers={"User-Agent": "torch.hub"}), timeout=PROBE_TIMEOUT_S):
            return False
    except Exception as exc:  # noqa: BLE001 - only a missing network decides; anything else goes the whole way
        if not _network_error(exc) or isinstance(exc, HTTPError):  # an HTTP answer: the network is there
            return False
        message = (f"could not load torchvision weights {entry['member']} ({type(exc).__name__}: {exc}); "
                   "falling back to RANDOM INIT: features and CAMs will be far weaker")
        _say_unreachable(cached, entry["weights_class"], entry["member"], exc, message)
        return True
