"""pipelines.matching on the shipped tiny pack: the methods tell single-object swaps apart, ComCLIP uses
the detector's boxes, the command line scores and evaluates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.attention import AttentionOffsets
from pipelines.matching import ClassifierConfig, Matchers, caption_entities
from pipelines.matching.__main__ import main
from conftest import PLACEMENTS
from pipelines.models import TINY_PACK_DIR, ModelManager, choose_placement
from pipelines.shapesworld.benchmark import compositional_groups

PACK = Path(TINY_PACK_DIR)
pytestmark = pytest.mark.skipif(not (PACK / "shapes-sd").is_dir() or not (PACK / "shapes-clip").is_dir(),
                                reason="the tiny pack (assets/models/tiny) is not on disk")


@pytest.fixture(scope="module", params=PLACEMENTS)
def matchers(request) -> Matchers:
    """The tiny pack's matchers on the CPU (fp32), and on CUDA in fp16 where a GPU exists."""
    placement = choose_placement(request.param, "float32" if request.param == "cpu" else "float16")
    return Matchers(ModelManager("tiny", placement), classifier=ClassifierConfig(num_timesteps=8, warmup=3,
                                                                                   confidence=None))


@pytest.fixture(scope="module")
def singles():
    return compositional_groups(6, seed=5, kinds=("colour_single", "shape_single"))


def _decisions(score, groups) -> int:
    """How many of the 2 x len(groups) images rank their own caption first."""
    right = 0
    for group in groups:
        for j in (0, 1):
            right += score(group.images[j], list(group.captions)).ranking()[0] == j
    return right


@pytest.mark.parametrize("method, least", [("dc-uniform", 10), ("clip", 10), ("discffusion", 9)])
def test_methods_tell_single_object_swaps_apart(matchers, singles, method, least):
    # measured on 100 groups: DC and Discffusion (denoising term) ~0.95 per decision, CLIP ~0.95
    assert _decisions(matchers.scorer(method), singles) >= least


def test_hierarchical_dc_spends_fewer_evaluations(matchers, singles):
    uniform = matchers.scorer("dc-uniform")(singles[0].images[0], list(singles[0].captions))
    beam = matchers.scorer("dc-hierarchical")(singles[0].images[0], list(singles[0].captions))
    assert uniform.unet_evaluations == 2 * 8 and beam.unet_evaluations == 2 * 3


def test_comclip_uses_subject_and_object_subimages(matchers):
    group = compositional_groups(1, seed=2, kinds=("colour",))[0]
    assert caption_entities(group.captions[0]).predicate is not None
    comclip = matchers.scorer("comclip")
    detected = comclip(group.images[0], list(group.captions))
    whole_image = comclip.__self__.score(group.images[0], list(group.captions), boxes=[])
    clip = matchers.scorer("clip")(group.images[0], list(group.captions))
    np.testing.assert_allclose(whole_image.scores, clip.scores, atol=1e-6)  # no boxes: ComCLIP is CLIP
    assert not np.allclose(detected.scores, clip.scores)


def test_offsets_load_into_both_discffusion_methods(matchers, tmp_path):
    scorer = matchers.discffusion()
    offsets = AttentionOffsets.from_unet(matchers.backbone.unet, layers=scorer.layers)
    for p in offsets.parameters():
        p.data.normal_(0, 0.05)
    offsets.save(tmp_path / "offsets.safetensors")
    image, captions = np.full((64, 64, 3), 200, np.uint8), ["a red circle", "a blue square"]
    before = matchers.scorer("discffusion")(image, captions).scores
    try:
        matchers.load_offsets(tmp_path / "offsets.safetensors")
        after = matchers.scorer("discffusion")(image, captions).scores
        assert not np.allclose(before, after)
    finally:
        matchers.offsets = None


def test_cli_scores_and_evaluates(tmp_path, capsys):
    group = compositional_groups(1, seed=3, kinds=("colour_single",))[0]
    path = tmp_path / "image.png"
    Image.fromarray(group.images[0]).save(path)
    assert main(["score", str(path), *group.captions, "--methods", "clip,discffusion"]) == 0
    out = capsys.readouterr().out
    assert "clip (" in out and "discffusion (" in out and out.count("1. ") == 2
    assert main(["eval", "--benchmark", "shapesworld-comp", "--methods", "clip,comclip", "--groups", "5"]) == 0
    out = capsys.readouterr().out
    assert "shapesworld-comp: 5 groups" in out and "comclip" in out
    assert main(["score", str(tmp_path / "missing.png"), "a red circle"]) == 2
    assert main(["eval", "--methods", "bogus"]) == 2


def test_discffusion_ranks_every_shipped_match_example_right():
    """Issue 19: the Match tab's examples (the first is the default) are ranked right by Discffusion on the tiny
    pack, its caption first in each; on pack v1 the default example picked a swap."""
    import json

    from pipelines.matching.runner import MatchRequest, MatchRunner

    folder = Path(__file__).resolve().parents[1] / "assets" / "examples" / "match"
    examples = json.loads((folder / "examples.json").read_text())["examples"]
    runner = MatchRunner(ModelManager("tiny"))
    for example in examples:
        with Image.open(folder / example["image"]) as opened:
            image = np.asarray(opened.convert("RGB"))
        report = runner.run(MatchRequest(image, example["captions"], ["discffusion"]))
        assert report.winners()["discffusion"] == example["captions"][0], example["image"]
