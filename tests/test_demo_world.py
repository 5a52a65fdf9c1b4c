"""The synthetic world and its reader must agree perfectly on clean renders, otherwise the
demo's quality score would measure the ruler instead of the model."""

import numpy as np
import pytest

from training.demo import analysis, world


def test_held_out_triples_never_appear_in_training():
    train, test = world.held_out_split(seed=0)
    train_triples = {(s.color, s.shape, s.motion) for s in train}
    test_triples = {(s.color, s.shape, s.motion) for s in test}
    assert test and train and not (train_triples & test_triples)
    assert len(train) + len(test) == len(world.all_scenes())


def test_render_is_deterministic_and_seed_dependent():
    scene = world.Scene("red", "circle", "left", "gray")
    a = world.render_scene(scene, 8, seed=3)
    assert a.shape == (8, 64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, world.render_scene(scene, 8, seed=3))
    assert not np.array_equal(a, world.render_scene(scene, 8, seed=4))


@pytest.mark.parametrize("scene", world.all_scenes()[::7], ids=lambda s: s.caption.replace(" ", "_"))
def test_reader_recovers_every_attribute_of_clean_renders(scene):
    reading = analysis.read_clip(world.render_scene(scene, 16, seed=11))
    assert (reading.color, reading.shape, reading.motion, reading.background) == \
        (scene.color, scene.shape, scene.motion, scene.background)


def test_reader_reports_nothing_for_an_empty_clip():
    empty = np.full((8, 64, 64, 3), 120, dtype=np.uint8)
    reading = analysis.read_clip(empty)
    assert reading.background == "gray" and reading.color is None and reading.motion is None


def test_video_with_cuts_concatenates_scenes():
    scenes = [world.Scene("red", "circle", "left", "gray"), world.Scene("blue", "square", "up", "black")]
    video = world.render_video(scenes, [10, 12], seed=1)
    assert video.shape[0] == 22
    assert analysis.read_clip(video[10:]).color == "blue"
