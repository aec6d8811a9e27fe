"""Learned per-pixel features from the tiny pack's CLIP (thesis eq. 11.12) and its text queries (eq. 11.14):
judged against ShapesWorld's truth masks, which the features never see."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.morpho4d.clip_features import ClipFeatureEncoder, clip_encoder
from pipelines.morpho4d.editing import gaussian_probabilities
from pipelines.morpho4d.queries import UnknownQueryError, encoder_for
from pipelines.morpho4d.truth import video_truth
from pipelines.shapesworld import sample_video


@pytest.fixture(scope="module")
def video_and_encoder():
    video = sample_video(1001, 64, 3, 2)
    background = np.median(video.frames[0].reshape(-1, 3), axis=0) / 255.0
    return video, clip_encoder(background=background)


def test_pixels_are_classified_by_their_objects_text(video_and_encoder):
    """Each pixel's feature is closest to its own object's name (text encoder) or to the background (image of
    the plain colour) for most pixels; measured 0.96 on 12 frames of 4 videos when chosen."""
    video, encoder = video_and_encoder
    features = encoder.pixel_features(video.frames)
    ids, names = video_truth(video)
    assert features.shape == (3, 64, 64, encoder.dim) and features.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(features, axis=-1), 1.0, atol=1e-4)
    table = np.stack([encoder.encode(name) for name in names])
    label = (features @ table.T).argmax(-1)
    assert (label == ids).mean() >= 0.85
    assert (label[ids > 0] == ids[ids > 0]).mean() >= 0.6
    # A query's pixels (eq. 11.13 at CLIP's temperature, p >= 0.85) lie on its object: the colour gate keeps
    # windows near an object from looking like it (without it, precision 0.47 when measured).
    for k, name in enumerate(names[1:], start=1):
        p = gaussian_probabilities(features, table[k], np.delete(table, k, axis=0), encoder.temperature)
        chosen, truth = p >= 0.85, ids == k
        assert (chosen & truth).sum() / chosen.sum() >= 0.9 and (chosen & truth).sum() / truth.sum() >= 0.5, name


def test_feature_space_names_its_encoder(video_and_encoder):
    """A saved scene's ``feature_space`` finds the same encoder (same background vector, same text space)."""
    _, encoder = video_and_encoder
    again = encoder_for(encoder.space)
    assert isinstance(again, ClipFeatureEncoder) and again.space == encoder.space
    np.testing.assert_allclose(again.encode("background"), encoder.encode("background"), atol=1e-6)
    np.testing.assert_allclose(again.encode("the red circles"), encoder.encode("red circle"), atol=1e-6)
    assert encoder.words("the red circles") == ("red", "circle")
    with pytest.raises(UnknownQueryError, match="does not know 'zebra'"):
        encoder.words("zebra")


def test_a_photos_background_is_the_words_text_embedding_and_its_space_finds_it_again(video_and_encoder):
    _, coloured = video_and_encoder
    photo = clip_encoder(background=None)
    assert photo.space == "clip-windows:shapes-clip:w24s4:bgtext" and photo.background is None
    np.testing.assert_allclose(photo.encode("background"), photo.encode_texts(["background"])[0], atol=1e-6)
    assert not np.allclose(photo.encode("background"), coloured.encode("background"), atol=1e-3)
    again = encoder_for(photo.space)
    assert again.space == photo.space and np.allclose(again.encode("background"), photo.encode("background"))
