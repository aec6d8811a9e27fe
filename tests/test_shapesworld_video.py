"""ShapesWorld videos: truth, determinism, and Farneback motion-intensity labels."""

import numpy as np
import pytest

from pipelines.errors import InvalidInputError
from pipelines.shapesworld import (
    DIRECTIONS,
    SPEEDS,
    detect,
    motion_intensity,
    parse_caption,
    sample_video,
    speed_for_intensity,
)
from pipelines.shapesworld.metrics import box_iou
from pipelines.shapesworld.video import max_intensity


def test_same_seed_same_video_and_seeds_differ():
    a, b = sample_video(5), sample_video(5)
    assert a.frames.tobytes() == b.frames.tobytes() and a.record() == b.record()
    assert len({sample_video(seed, n_frames=4).frames.tobytes() for seed in range(20)}) == 20


def test_video_truth_matches_the_frames():
    for seed in range(30):
        video = sample_video(seed, size=64, n_frames=12)
        assert video.frames.shape == (12, 64, 64, 3) and video.frames.dtype == np.uint8
        assert 1 <= len(video.objects) <= 2 and video.objects[0].moving
        assert parse_caption(video.caption).motion.direction == video.direction
        mover = video.objects[0]
        assert mover.boxes.shape == (12, 4) and mover.masks.shape == (12, 64, 64)
        steps = np.diff((mover.boxes[:, :2] + mover.boxes[:, 2:]) / 2, axis=0)
        # Constant speed along the path, in the caption's direction overall.
        assert np.allclose(np.hypot(*steps.T), video.pixel_speed, rtol=0.02)
        assert np.dot(steps.sum(axis=0), DIRECTIONS[video.direction]) > 0
        for t in (0, 11):
            found = [d for d in detect(video.frames[t]) if d.colour == mover.colour and d.shape == mover.shape]
            assert found and box_iou(found[0].box, tuple(mover.boxes[t])) > 0.8
        if len(video.objects) == 2:
            still = video.objects[1]
            assert not still.moving and np.all(still.boxes == still.boxes[0])
            assert not (still.masks & mover.masks).any()


def test_bounces_follow_an_arc_and_moves_a_line():
    arc = sample_video(1, verb="bounces", direction="from left to right", speed="quickly")
    line = sample_video(1, verb="slides", direction="from left to right", speed="quickly")
    arc_y = (arc.objects[0].boxes[:, 1] + arc.objects[0].boxes[:, 3]) / 2
    line_y = (line.objects[0].boxes[:, 1] + line.objects[0].boxes[:, 3]) / 2
    assert np.ptp(line_y) < 1e-3
    assert arc_y[len(arc_y) // 2] < arc_y[0] - 2  # a horizontal bounce arcs upward


def test_leaving_side_start_puts_the_path_on_the_side_it_leaves_from():
    size = 64
    for direction, (dx, dy) in DIRECTIONS.items():
        starts = []
        for seed in range(12):
            video = sample_video(seed, size=size, direction=direction, start="leaving_side")
            centres = (video.objects[0].boxes[:, :2] + video.objects[0].boxes[:, 2:]) / 2
            starts.append(centres[0])
            # The path still fits the frame and goes the caption's way.
            assert np.all(video.objects[0].boxes >= 0) and np.all(video.objects[0].boxes <= size)
            assert np.dot(centres[-1] - centres[0], (dx, dy)) > 0
        starts = np.array(starts) / size
        for axis, component in enumerate((dx, dy)):
            if component > 0:  # leaves from the low side: starts within the first fifth of the room, plus a half side
                assert starts[:, axis].max() < 0.3
            elif component < 0:
                assert starts[:, axis].min() > 0.7
            else:  # the other axis keeps its spread
                assert np.ptp(starts[:, axis]) > 0.3
    # The default placement is unchanged by the option's existence, and differs from it.
    assert sample_video(4).frames.tobytes() == sample_video(4, start="anywhere").frames.tobytes()
    assert sample_video(4).frames.tobytes() != sample_video(4, start="leaving_side").frames.tobytes()
    with pytest.raises(InvalidInputError, match="starts"):
        sample_video(0, start="middle")


def test_intensity_labels_rise_with_speed_and_span_the_range():
    measured = {level: [sample_video(seed, intensity=level).intensity for seed in range(4)] for level in range(1, 11)}
    means = [np.mean(measured[level]) for level in range(1, 11)]
    assert all(b > a for a, b in zip(means, means[1:]))
    assert min(means) <= 1.5 and max(means) >= 9
    # speed_for_intensity inverts motion_intensity (within one level).
    assert all(abs(mean - level) <= 0.5 for level, mean in zip(range(1, 11), means))
    by_word = [np.mean([sample_video(seed, speed=word).intensity for seed in range(6)]) for word in SPEEDS]
    assert by_word == sorted(by_word) and by_word[0] < 4 and by_word[-1] > 7


@pytest.mark.parametrize("size", [32, 128])
def test_intensity_is_independent_of_frame_and_object_size(size):
    for level in (2, 5, 9):
        levels = [sample_video(seed, size=size, intensity=level).intensity for seed in range(3)]
        assert all(abs(got - level) <= 1 for got in levels)


def test_motion_intensity_of_a_still_video_is_one():
    frames = np.repeat(sample_video(0).frames[:1], 6, axis=0)
    level, magnitude = motion_intensity(frames)
    assert (level, magnitude) == (1, 0.0)
    with pytest.raises(InvalidInputError):
        motion_intensity(frames[:1])


def test_speed_for_intensity_and_limits():
    assert speed_for_intensity(10, 64) == pytest.approx(3.2)
    assert speed_for_intensity(1, 128) == pytest.approx(0.64)
    with pytest.raises(InvalidInputError):
        speed_for_intensity(0, 64)
    assert max_intensity(16) == 10 and max_intensity(32) < 8
    with pytest.raises(InvalidInputError, match="does not fit"):
        sample_video(0, n_frames=40, speed="quickly")
    assert sample_video(0, n_frames=40).intensity <= max_intensity(40) + 1
    with pytest.raises(InvalidInputError):
        sample_video(0, intensity=3, speed="quickly")
    with pytest.raises(InvalidInputError):
        sample_video(0, n_frames=1)
    with pytest.raises(InvalidInputError):
        sample_video(0, direction="sideways")
