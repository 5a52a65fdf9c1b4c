"""PySceneDetect's ContentDetector, keeping each frame's score for the split stage's spike check.

Imported only when scenes are detected: PySceneDetect is part of the ``preprocess`` extra.
"""

from __future__ import annotations

from scenedetect import ContentDetector


class ScoredContentDetector(ContentDetector):
    """ContentDetector that keeps each frame's score (how much frame i differs from frame i - 1)
    by frame number. A StatsManager would keep it too, but makes the detector compute edge maps
    its default weights never use (about 1.6x slower)."""

    def __init__(self, threshold: float, min_scene_len: int):
        super().__init__(threshold=threshold, min_scene_len=min_scene_len)
        self.scores: dict[int, float] = {}

    def _calculate_frame_score(self, timecode, frame_img) -> float:  # PySceneDetect 0.7's scoring hook
        score = super()._calculate_frame_score(timecode, frame_img)
        self.scores[timecode.frame_num] = score
        return score
