"""Names in the paper release's and prismatic-vlms' ``config.json`` ↔ ssmvlm's zoo names, taps and settings.

Facts from the repositories (raykuo18/vlm-ssm-vision-encoders ``model_zoo/models.yaml`` and
``models/backbones/vision/*.py``; TRI-ML/prismatic-vlms ``models/materialize.py``):

- ``vision_backbone_id`` is the config's name of the encoder; the release's public ``model_id`` is another name
  (``vit-s-in1k-224`` for ``in1k-vit-s``). Both are mapped here.
- Where features are read: ViTs the penultimate block; MaxViT ``-s3`` the output of ``stages[2]``; MambaVision
  ``-s3`` the *input* of stage 3 (the release counts the stem as stage 1, so its "stage 3" is the output of
  ``levels[1]`` after its downsample: ssmvlm tap ``s3.in``); VMamba ``vmamba_feature_stage`` /
  ``vmamba_feature_layer`` (default: the last block of the last stage) followed by ``outnorm{stage}`` (trained in
  the detection/segmentation checkpoints, its initial state (= ssmvlm's parameter-free norm) for
  classification ones); ViTDet the last block (``last_feat``); ViT-Adapter its last output (``f4``).
- What "letterbox" means: for the classification encoders prismatic's symmetric pad to a square, then resize;
  for ViTDet, ViT-Adapter and the VMamba COCO/ADE20K encoders a bilinear, downscale-only fit into 1024²,
  800×1333 (H×W) or 512², padded right/bottom (ssmvlm ``letterbox-br-down``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ssmvlm.backbones.base import FeatureTap

# The release writes this for the stage/layer of its VMamba taps (config.json "model", or the top level).
VMAMBA_STAGE_KEY = "vmamba_feature_stage"
VMAMBA_LAYER_KEY = "vmamba_feature_layer"


@dataclass(frozen=True)
class EncoderId:
    """One ``vision_backbone_id`` and what ssmvlm builds for it."""

    vision_backbone_id: str
    backbone: str  # zoo name
    feature_tap: str  # for VMamba ids: the release's default tap; the config's stage/layer override it
    image_size: int | tuple[int, int]
    letterbox: str = "letterbox"  # ssmvlm's strategy for the source's "letterbox"
    public_id: str | None = None  # the release's model_id, where it released a model on this encoder
    source: str = "release"  # "release" | "prismatic"
    vmamba_depths: tuple[int, ...] | None = None  # VMamba ids: blocks per stage (the stage/layer fields apply)
    dense: bool = False  # VMamba detection/segmentation ids: the tap ends in the trained outnorm

    def tap(self, stage: int | None, layer: int | None) -> str:
        """The ssmvlm tap for this id and the config's ``vmamba_feature_stage`` / ``vmamba_feature_layer``."""
        if self.vmamba_depths is None:
            if stage is not None or layer is not None:
                raise ValueError(
                    f"{VMAMBA_STAGE_KEY}/{VMAMBA_LAYER_KEY} name VMamba taps; {self.vision_backbone_id} is not one"
                )
            return self.feature_tap
        stage = len(self.vmamba_depths) if stage is None else stage
        if not 1 <= stage <= len(self.vmamba_depths):
            raise ValueError(f"{VMAMBA_STAGE_KEY}={stage} is out of range for {len(self.vmamba_depths)} stages")
        depth = self.vmamba_depths[stage - 1]
        layer = depth - 1 if layer is None else layer + depth if layer < 0 else layer  # negative: from the end
        if not 0 <= layer < depth:
            raise ValueError(f"{VMAMBA_LAYER_KEY}={layer} is out of range for stage {stage} ({depth} blocks)")
        if not self.dense and stage == len(self.vmamba_depths):
            # The release then reuses the classifier's trained norm as the tap's outnorm; ssmvlm does not.
            raise ValueError(f"the last stage of a classification VMamba ({self.vision_backbone_id}) is not supported")
        return f"s{stage}.b{layer}" + (".outnorm" if self.dense else "")

    def tap_fields(self, feature_tap: str) -> dict[str, int] | None:
        """The config fields naming ``feature_tap`` on this id (VMamba: stage/layer; others: none), or None
        when the id does not read features there."""
        tap = FeatureTap.parse(feature_tap)
        if self.vmamba_depths is None:
            return {} if tap == FeatureTap.parse(self.feature_tap) else None
        stages = len(self.vmamba_depths)
        if tap.stage is None or tap.stage_input or tap.outnorm != self.dense or not 1 <= tap.stage <= stages:
            return None
        depth = self.vmamba_depths[tap.stage - 1]
        if not -depth <= tap.block < depth or (not self.dense and tap.stage == stages):
            return None
        return {VMAMBA_STAGE_KEY: tap.stage, VMAMBA_LAYER_KEY: tap.block % depth}


_VIT = "b-2"
_SMALL_S2L15 = (2, 2, 15, 2)
_VMAMBA_DEPTHS = {
    "vmamba_tiny_s1l8": (2, 2, 8, 2), "vmamba_tiny_s2l5": (2, 2, 5, 2), "vmamba_small_s2l15": _SMALL_S2L15,
    "vmamba_base_s2l15": _SMALL_S2L15, "vmamba_small_s1l20": (2, 2, 20, 2), "vmamba_base_s1l20": (2, 2, 20, 2),
    "vmamba_v0_tiny": (2, 2, 9, 2), "vmamba_v0_small": (2, 2, 27, 2), "vmamba_v0_base": (2, 2, 27, 2),
}  # fmt: skip
_VMAMBA_CLS = {
    "vmamba-tiny-s1l8": "vmamba_tiny_s1l8", "vmamba-tiny-s2l5": "vmamba_tiny_s2l5",
    "vmamba-small-s2l15": "vmamba_small_s2l15", "vmamba-base-s2l15": "vmamba_base_s2l15",
    "vmamba-small-s1l20": "vmamba_small_s1l20", "vmamba-base-s1l20": "vmamba_base_s1l20",
    "vmamba-tiny-vanilla": "vmamba_v0_tiny", "vmamba-small-vanilla": "vmamba_v0_small",
    "vmamba-base-vanilla": "vmamba_v0_base",
}  # fmt: skip
_VMAMBA_DET = ("-det-maskrcnn-1x", "-det-maskrcnn-3x")
_VMAMBA_SEG = "-seg-ade20k"
_MAMBAVISION = {"t": "mambavision_t", "t2": "mambavision_t2", "s": "mambavision_s", "b": "mambavision_b",
                "l": "mambavision_l"}  # fmt: skip
_PUBLIC = {
    "in1k-vit-s": "vit-s-in1k-224",
    "in1k-224px-maxvit-t-s3": "maxvit-t-in1k-224-s3",
    "mambavision-b-s3": "mambavision-b-in1k-224-s3",
    "vmamba-small-s2l15": "vmamba-s-in1k-224-s3",
    "vitdet-b-maskrcnn": "vitdet-b-coco-1024",
    "vmamba-small-s2l15-det-maskrcnn-1x": "vmamba-s-coco-1333x800",
    "vmamba-small-s2l15-seg-ade20k": "vmamba-s-ade20k-512",
    "vit-adapter-upernet-deit-b-ade20k-512": "vit-adapter-deit-b-ade20k-512",
}

def _vmamba_ids() -> list[EncoderId]:
    ids = []
    for config_id, zoo in _VMAMBA_CLS.items():
        depths = _VMAMBA_DEPTHS[zoo]
        ids.append(EncoderId(config_id, zoo, f"s3.b{depths[2] - 1}", 224, public_id=_PUBLIC.get(config_id),
                             vmamba_depths=depths))
        for suffix in _VMAMBA_DET:
            dense_id = config_id + suffix
            ids.append(EncoderId(dense_id, zoo, f"s3.b{depths[2] - 1}.outnorm", (800, 1333), "letterbox-br-down",
                                 _PUBLIC.get(dense_id), vmamba_depths=depths, dense=True))
        seg_id = config_id + _VMAMBA_SEG
        ids.append(EncoderId(seg_id, zoo, f"s3.b{depths[2] - 1}.outnorm", 512, "letterbox-br-down",
                             _PUBLIC.get(seg_id), vmamba_depths=depths, dense=True))
    return ids  # fmt: skip


def _release_ids() -> list[EncoderId]:
    ids = [
        EncoderId("in1k-vit-s", "vit_small_patch16", _VIT, 224, public_id=_PUBLIC["in1k-vit-s"]),
        EncoderId("in1k-vit-b", "vit_base_patch16", _VIT, 224),
        EncoderId("in1k-224px-maxvit-t-s3", "maxvit_tiny_tf", "s3", 224, public_id=_PUBLIC["in1k-224px-maxvit-t-s3"]),
        EncoderId("vitdet-b-maskrcnn", "vitdet_base", "b-1", 1024, "letterbox-br-down", _PUBLIC["vitdet-b-maskrcnn"]),
        # The release's loader reads adapter output 3 (f4, stride 32: 256 tokens at 512²); models.yaml lists 1024.
        EncoderId("vit-adapter-upernet-deit-b-ade20k-512", "vit_adapter_deit_base", "s4", 512, "letterbox-br-down",
                  _PUBLIC["vit-adapter-upernet-deit-b-ade20k-512"]),
    ]
    ids += [EncoderId(f"mambavision-{size}-s3", zoo, "s3.in", 224, public_id=_PUBLIC.get(f"mambavision-{size}-s3"))
            for size, zoo in _MAMBAVISION.items()]  # fmt: skip
    return ids + _vmamba_ids()


def _prismatic_ids() -> list[EncoderId]:
    from ssmvlm.backbones.prismatic import PRISMATIC_FUSED, PRISMATIC_VITS

    sizes = {name: vit.image_size for name, vit in PRISMATIC_VITS.items()}
    sizes.update({name: sizes[members[1]] for name, members in PRISMATIC_FUSED.items()})
    return [EncoderId(name, name, _VIT, size, source="prismatic") for name, size in sizes.items()]


ENCODER_IDS: dict[str, EncoderId] = {entry.vision_backbone_id: entry for entry in _release_ids() + _prismatic_ids()}
PUBLIC_IDS: dict[str, str] = {public_id: vision_id for vision_id, public_id in _PUBLIC.items()}

# arch_specifier (after an optional "no-align+" prefix) → ssmvlm connector; the same names on both sides.
CONNECTORS: tuple[str, ...] = ("linear", "gelu-mlp", "fused-gelu-mlp")
NO_ALIGN = "no-align+"

# llm_backbone_id → ssmvlm prompt format (prismatic: vicuna_v15_prompter for Vicuna, PurePromptBuilder for the
# "pure" base models).
LLM_PROMPT_FORMATS: dict[str, str] = {
    "vicuna-v15-7b": "vicuna-v15",
    "vicuna-v15-13b": "vicuna-v15",
    "llama2-7b-pure": "plain",
    "llama2-13b-pure": "plain",
    "mistral-v0.1-7b-pure": "plain",
}


def connector_for(arch_specifier: str) -> str | None:
    """The ssmvlm connector of a prismatic ``arch_specifier`` (None: not one ssmvlm has)."""
    name = arch_specifier.removeprefix(NO_ALIGN)
    return name if name in CONNECTORS else None
