"""mptune: Multitask Prompt Tuning (Wang et al., ICLR 2023) on a frozen language model.

    from mptune import RunConfig, load_backbone, stages
    cfg = RunConfig(sources=["mnli", "qnli", "sst2"], targets=["rte"])
    backbone = load_backbone(cfg.model.name)
    stages.teach(cfg, backbone); stages.distill(cfg, backbone); stages.adapt(cfg, backbone)
"""

from mptune.config import RunConfig
from mptune.errors import MptuneError
from mptune.models import load_backbone
from mptune.prompts import MultitaskPrompt, SoftPrompt

__all__ = ["RunConfig", "MptuneError", "load_backbone", "MultitaskPrompt", "SoftPrompt"]
__version__ = "0.1.0"
