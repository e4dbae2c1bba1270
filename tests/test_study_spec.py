"""Study spec loading and validation, and the run matrix: expansion, deduplication, stable ids."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from ssmvlm.backbones import registry, zoo
from ssmvlm.backbones.base import BackboneSpec, FeatureTap, TapInfo, VisionBackbone
from ssmvlm.study.matrix import DataRef, cell_id, expand_matrix
from ssmvlm.study.spec import load_spec, preset_path, validate_spec
from ssmvlm.utils.dotted_keys import nest_keys
from ssmvlm.utils.errors import ConfigError

FAKE_BACKBONES = {"fake_ssm": "ssm", "fake_vit": "transformer", "fake_cnn": "cnn"}


class _FakeBackbone(VisionBackbone):
    """A stride-16 patch embedding whose windows need the input side to be a multiple of 32."""

    def forward_tokens(self, pixel_values: torch.Tensor, tap: FeatureTap) -> torch.Tensor:
        if pixel_values.shape[-1] % 32 or pixel_values.shape[-2] % 32:
            raise ValueError(f"input side must be a multiple of 32, got {tuple(pixel_values.shape[-2:])}")
        return self.trunk(pixel_values).flatten(2).transpose(1, 2)

    def tap_info(self, tap: FeatureTap) -> TapInfo:
        return TapInfo(dim=8, stride=16)

    def forward_stages(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        return [self.trunk(pixel_values)]

    @property
    def stage_dims(self) -> list[int]:
        return [8]


def _build_trunk(image_size: int = 96, **_: object) -> nn.Module:
    return nn.Conv2d(3, 8, kernel_size=16, stride=16)


@pytest.fixture
def fake_zoo(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Three tiny backbones registered for the test only (removed again afterwards)."""
    assert zoo.FAMILY_MODULES  # the real zoo is loaded before the fakes join it
    for name, kind in FAKE_BACKBONES.items():
        spec = BackboneSpec(name=name, family=name.split("_")[1], kind=kind, default_tap="s1")
        monkeypatch.setitem(registry.BACKBONES, name, registry.RegisteredBackbone(spec, _build_trunk, _FakeBackbone))
    return list(FAKE_BACKBONES)


def _spec(tmp_path: Path, text: str, overrides: list[str] | None = None):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return load_spec(path, overrides=overrides)


BASE = """
name: t
backbones: [fake_ssm, fake_vit]
initializations: [shapes-cls]
resolutions: [64]
"""


def test_valid_spec_passes(fake_zoo: list[str], tmp_path: Path) -> None:
    spec = _spec(tmp_path, BASE)
    validate_spec(spec)
    assert spec.backbones == ["fake_ssm", "fake_vit"] and spec.stabilization.connector == "fused-gelu-mlp"


def test_unknown_key_names_path_and_allowed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"execution\.gpu: unknown key.*allowed: .*device, gpus, launcher"):
        _spec(tmp_path, BASE + "execution:\n  gpu: 2\n")
    with pytest.raises(ConfigError, match=r"stabilization\.apply_to: invalid value 'some'"):
        _spec(tmp_path, BASE, ["stabilization.apply_to=some"])


def test_unknown_backbone_lists_allowed(fake_zoo: list[str], tmp_path: Path) -> None:
    spec = _spec(tmp_path, BASE, ["backbones=[fake_ssm, vmamba_nanoo]"])
    with pytest.raises(ConfigError, match=r"backbones\[1\]: unknown backbone 'vmamba_nanoo'.*allowed:.*fake_vit"):
        validate_spec(spec)


def test_missing_checkpoint_rejected(fake_zoo: list[str], tmp_path: Path) -> None:
    (tmp_path / "fake_ssm.safetensors").write_bytes(b"x")
    spec = _spec(tmp_path, BASE, [f"initializations=['{tmp_path}/{{backbone}}.safetensors']"])
    with pytest.raises(ConfigError, match=r"initializations\[0\]: checkpoint file .*fake_vit.safetensors not found"):
        validate_spec(spec)
    validate_spec(_spec(tmp_path, BASE, [f"initializations=[{tmp_path}/fake_ssm.safetensors]"]))


def test_impossible_resolution_rejected(fake_zoo: list[str], tmp_path: Path) -> None:
    spec = _spec(tmp_path, BASE, ["resolutions=[64, 80]"])
    with pytest.raises(ConfigError, match=r"resolutions\[1\]: fake_ssm cannot take 80x80 input: .*multiple of 32"):
        validate_spec(spec)
    with pytest.raises(ConfigError, match=r"pretrain\.image_size: fake_ssm cannot take 48x48"):
        validate_spec(_spec(tmp_path, BASE, ["pretrain.image_size=48"]))


def test_unknown_names_of_other_stages(fake_zoo: list[str], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"connectors\[0\]: unknown value 'mlp3'.*fused-gelu-mlp"):
        validate_spec(_spec(tmp_path, BASE, ["connectors=[mlp3]"]))
    with pytest.raises(ConfigError, match=r"resize_strategies\[0\]: unknown value 'pad'.*letterbox-br"):
        validate_spec(_spec(tmp_path, BASE, ["resize_strategies=[pad]"]))
    with pytest.raises(ConfigError, match=r"seeds: must list at least one value"):
        validate_spec(_spec(tmp_path, BASE, ["seeds=[]"]))


def test_presets_load_with_the_promised_design() -> None:
    quick = load_spec(preset="quick")
    assert quick.backbones == ["vmamba_nano", "mambavision_nano", "vit_nano"]
    assert quick.initializations == ["shapes-cls"] and quick.execution.device == "cpu"
    paper = load_spec(preset="paper")
    assert len(paper.backbones) == 7 and paper.seeds == [0, 1, 2]
    assert set(paper.initializations) == {"shapes-cls", "shapes-det", "shapes-seg"}
    assert paper.stabilization.enabled and paper.execution.gpus == 1  # one H100; --gpus N for more
    # Each preset's encoders pretrain on scenes of their own, from the benchmark's distribution.
    assert quick.pretrain.scenes and paper.pretrain.scenes and paper.pretrain.images_seen >= 100_000
    # The paper preset's pretraining learns every object's attributes beside the label (probe 28); quick's does not.
    assert paper.pretrain.overrides == {"auxiliary_targets": True} and not quick.pretrain.overrides.get(
        "auxiliary_targets"
    )
    with pytest.raises(ConfigError, match=r"unknown study preset 'quik'.*allowed: paper, quick"):
        preset_path("quik")


def test_matrix_expansion_dedup_and_stable_ids(fake_zoo: list[str], tmp_path: Path) -> None:
    spec = _spec(
        tmp_path,
        BASE,
        ["initializations=[shapes-cls, shapes-det, none]", "seeds=[0, 1]", "connectors=[gelu-mlp, linear]"],
    )
    matrix = expand_matrix(spec)
    counts = matrix.counts()
    # 2 backbones × 3 inits × 2 seeds × 2 connectors VLM cells; one dataset; one pretraining per
    # backbone × produced init (the det one chained from the cls one), shared by both seeds and connectors.
    assert counts == {"dataset": 1, "pretrain": 2 * 2, "warmup": 0, "train": 24, "eval": 24}
    assert {c.config.seed for c in matrix.by_stage("pretrain")} == {0}
    per_seed = expand_matrix(
        _spec(tmp_path, BASE, ["initializations=[shapes-cls, shapes-det, none]", "seeds=[0, 1]", "pretrain.seed=null"])
    )
    assert per_seed.counts()["pretrain"] == 2 * 2 * 2
    det = [c for c in matrix.by_stage("pretrain") if c.config.objective == "detection"]
    assert all(any(dep.startswith("pretrain/") for dep in c.deps) for c in det)
    keys = [c.key for c in matrix]
    for cell in matrix:  # dependencies come first
        assert all(keys.index(dep) < keys.index(cell.key) for dep in cell.deps)
    again = expand_matrix(
        _spec(
            tmp_path,
            BASE,
            [
                "seeds=[0, 1]",
                "initializations=[shapes-cls, shapes-det, none]",
                "connectors=[gelu-mlp, linear]",
            ],
        )
    )
    assert [c.key for c in again] == keys  # same spec, same ids
    changed = expand_matrix(_spec(tmp_path, BASE, ["pretrain.images_seen=999"]))
    base = expand_matrix(_spec(tmp_path, BASE))
    assert changed.by_stage("dataset")[0].id == base.by_stage("dataset")[0].id
    assert {c.id for c in changed.by_stage("train")}.isdisjoint({c.id for c in base.by_stage("train")})


def test_pretraining_scenes_get_their_own_dataset_cell(fake_zoo: list[str], tmp_path: Path) -> None:
    settings = [
        "initializations=[shapes-cls, shapes-det]",
        "pretrain.scenes=500",
        "pretrain.dense_images_seen=77",
        "benchmark.shapes.scene={max_objects: 2, vqa_per_image: 4}",
    ]
    spec = _spec(tmp_path, BASE, settings)
    matrix = expand_matrix(spec)
    datasets = {c.config.namespace: c for c in matrix.by_stage("dataset")}
    assert set(datasets) == {"benchmark", "pretrain"}
    pretraining = datasets["pretrain"]
    assert pretraining.config.shapes.size == 500 and set(pretraining.config.shapes.splits) == {"train", "val"}
    assert pretraining.config.shapes.scene == {"max_objects": 2}  # the benchmark's scenes, less their questions
    assert "namespace" not in datasets["benchmark"].record and pretraining.record["namespace"] == "pretrain"
    for cell in matrix.by_stage("pretrain"):
        assert cell.config.data == DataRef(dataset=pretraining.id) and pretraining.key in cell.deps
        dense = cell.config.objective == "detection"
        assert cell.config.images_seen == (77 if dense else spec.pretrain.images_seen)
        assert cell.record["data"] == {"dataset": pretraining.id}  # what the id hashes
    for cell in matrix.by_stage("train"):  # the VLM still trains and evaluates on the benchmark
        assert cell.config.data == DataRef(dataset=datasets["benchmark"].id)
    more_questions = "benchmark.shapes.scene={max_objects: 2, vqa_per_image: 9, existence_turns: true}"
    reworded = expand_matrix(_spec(tmp_path, BASE, [*settings[:-1], more_questions]))
    assert reworded.by_stage("pretrain") and [c.id for c in reworded.by_stage("pretrain")] == [
        c.id for c in matrix.by_stage("pretrain")
    ]  # new questions, same encoders
    assert {c.id for c in reworded.by_stage("train")}.isdisjoint({c.id for c in matrix.by_stage("train")})


def test_training_mix_joins_the_training_cells_only(fake_zoo: list[str], tmp_path: Path) -> None:
    base = expand_matrix(_spec(tmp_path, BASE))
    spec = _spec(tmp_path, BASE, ["benchmark.train_mix.size=300", "benchmark.train_mix.scene={max_objects: 1}"])
    validate_spec(spec)
    matrix = expand_matrix(spec)
    datasets = {c.config.namespace: c for c in matrix.by_stage("dataset")}
    assert set(datasets) == {"benchmark", "mix"}
    mix = datasets["mix"]
    assert mix.config.shapes.size == 300 and mix.config.shapes.splits == {"train": 1.0}
    assert mix.config.shapes.scene == {"max_objects": 1} and mix.record["namespace"] == "mix"
    assert datasets["benchmark"].id == base.by_stage("dataset")[0].id  # the benchmark itself is unchanged
    for cell in matrix.by_stage("train"):
        assert cell.config.mix == DataRef(dataset=mix.id) and mix.key in cell.deps
        assert cell.config.data == DataRef(dataset=datasets["benchmark"].id)
    for cell in matrix.by_stage("eval"):  # evaluated on the benchmark alone (ids change: their training did)
        assert mix.key not in cell.deps and cell.config.data == DataRef(dataset=datasets["benchmark"].id)
    assert all("mix" not in cell.record for cell in base.by_stage("train"))  # ids of studies without a mix keep
    assert {c.id for c in matrix.by_stage("train")}.isdisjoint({c.id for c in base.by_stage("train")})
    with pytest.raises(ConfigError, match=r"benchmark\.train_mix\.size: expected 0 \(no mix\)"):
        validate_spec(_spec(tmp_path, BASE, ["benchmark.train_mix.size=-1"]))
    misspelt = _spec(tmp_path, BASE, ["benchmark.train_mix.size=9", "benchmark.train_mix.scene={max_object: 1}"])
    with pytest.raises(ConfigError, match=r"benchmark\.train_mix\.scene: .*max_object"):
        validate_spec(misspelt)


def test_llm_warmup_is_one_cell_that_every_training_cell_needs(fake_zoo: list[str], tmp_path: Path) -> None:
    base = expand_matrix(_spec(tmp_path, BASE))
    spec = _spec(tmp_path, BASE, ["llm_warmup.enabled=true", "llm_warmup.epochs=2", "recipe.overrides.optim.epochs=5"])
    validate_spec(spec)
    matrix = expand_matrix(spec)
    (warmup,) = matrix.by_stage("warmup")
    assert warmup.config.grid == 6 and warmup.config.llm == spec.llm
    assert nest_keys(warmup.config.recipe_overrides.items())["optim"]["epochs"] == 2  # its own epochs win
    for cell in matrix.by_stage("train"):
        assert warmup.key in cell.deps and cell.config.llm_warmup == warmup.id
        assert nest_keys(cell.config.recipe_overrides.items())["optim"]["epochs"] == 5  # the VLM keeps the recipe's
    assert all("llm_warmup" not in cell.record for cell in base.by_stage("train"))  # ids without it keep
    # A spec's dotted epochs and a command line's nested ones: the same warm-up when its own epochs pin it.
    pinned = _spec(tmp_path, BASE + "recipe: {overrides: {optim.epochs: 2}}\n", ["llm_warmup.enabled=true"])
    (pinned_warmup,) = expand_matrix(pinned).by_stage("warmup")
    assert pinned_warmup.id == warmup.id
    with pytest.raises(ConfigError, match=r"llm_warmup\.epochs: expected at least 1 epoch"):
        validate_spec(_spec(tmp_path, BASE, ["llm_warmup.enabled=true", "llm_warmup.epochs=0"]))
    with pytest.raises(ConfigError, match=r"llm_warmup\.enabled: .*scenes\.json not found"):
        validate_spec(_spec(tmp_path, BASE, ["llm_warmup.enabled=true", f"benchmark.data_root={tmp_path}"]))


def test_cell_ids_do_not_depend_on_how_overrides_are_spelt(fake_zoo: list[str], tmp_path: Path) -> None:
    """A spec's dotted override, the same key nested, and both at once (a preset's key repeated on the command
    line, as probe 23 did) are one run: the same training and pretraining cells."""
    dotted = BASE + "recipe: {overrides: {model.box_frame: model}}\npretrain: {overrides: {optim.lr: 0.002}}\n"
    nested = BASE + "recipe: {overrides: {model: {box_frame: model}}}\npretrain: {overrides: {optim: {lr: 0.002}}}\n"
    repeated = ["recipe.overrides.model.box_frame=model", "pretrain.overrides.optim.lr=0.002"]
    matrices = [expand_matrix(_spec(tmp_path, dotted)), expand_matrix(_spec(tmp_path, nested)),
                expand_matrix(_spec(tmp_path, dotted, repeated))]
    for stage in ("pretrain", "train"):
        ids = [sorted(cell.id for cell in matrix.by_stage(stage)) for matrix in matrices]
        assert ids[0] and ids[0] == ids[1] == ids[2], stage
    (train, *_) = matrices[1].by_stage("train")
    assert train.config.recipe_overrides == {"model.box_frame": "model"}
    changed = expand_matrix(_spec(tmp_path, dotted, ["recipe.overrides.model.box_frame=raw"]))
    assert {c.id for c in changed.by_stage("train")}.isdisjoint({c.id for c in matrices[0].by_stage("train")})


def test_cell_id_ignores_key_order() -> None:
    assert cell_id("train", {"a": 1, "b": {"c": 2, "d": 3}}) == cell_id("train", {"b": {"d": 3, "c": 2}, "a": 1})
    assert cell_id("train", {"a": 1}) != cell_id("eval", {"a": 1})
    assert len(cell_id("train", {})) == 12


def test_quick_preset_validates_against_the_zoo() -> None:
    from ssmvlm.backbones import list_vision_backbones

    spec = load_spec(preset="quick")
    if not set(spec.backbones) <= set(list_vision_backbones()):
        pytest.skip("the quick preset's backbones are not all registered yet")
    validate_spec(spec)


def test_recipe_overrides_from_the_spec_and_the_command_line_combine() -> None:
    # A preset's dotted keys and a command line's nested override of one of them: every key survives, the
    # command line's value wins (it comes later), whatever nesting each side used.
    spec = load_spec(preset="paper", overrides=["recipe.overrides.optim.epochs=7"])
    nested = nest_keys(spec.recipe.overrides.items())
    expected = {
        "epochs": 7,
        "global_batch_size": 128,
        "per_device_batch_size": 128,
        "learning_rate": 2.8e-3,
        "loss_reduction": "sqrt",
    }
    assert nested["optim"] == expected
    assert nested["data"] == {"split_turns": True}
    assert nested["model"] == {"image_position": "after-question", "llm_init_std": 0.088, "box_frame": "model"}
