"""Caption cleaning: expected outputs were produced by the reference pipeline's cleaner (with
BeautifulSoup and ftfy installed) on the same inputs."""

import pytest

from easyanimate_core.text_cleaning import clean_caption, fix_text, strip_html

REFERENCE_OUTPUTS = [
    ("A Cat sits on the MAT.", "a cat sits on the mat."),
    ("  Visit https://example.com/page now!! <b>bold</b> &amp; more", "visit now!! bold more"),
    ("@user123 said: \u201chello\u201d \u2018world\u2019 \u2014 ok", "said: \"hello\" 'world' - ok"),
    ("photo_of_my_cute_cat_in-the-garden.jpg", ""),
    ("IP 192.168.0.1 and #12 and #123456 and 1234567", "ip and and and"),
    ("free shipping worldwide, click for details page 3", "worldwide"),
    ("size 1920x1080 jc6640 jc6640vc 6640vc231 a1b2c3d4", "size"),
    ('"quoted caption"', "quoted caption"),
    ("'lead", "lead"),
    ("trail+", "trail"),
    (".hidden", ""),
    ("\u4e2d\u6587 mixed \u6f22\u5b57 text", "mixed text"),
    ("a ... b . c", "a b c"),
    ("***SALE*** {x} [y] (z) |w| ~a~", "sale x y z w a"),
    ("\uff26\uff55\uff4c\uff4c\uff57\uff49\uff44\uff54\uff48 text", "fullwidth text"),
    ("\ufb01ne ligature", "fine ligature"),
    ("line\\nbreak", "line break"),
    ("x : y", "x: y"),
    ("one,two.three/four", "one, two. three four"),
    ("The video is of high quality, and the view is very clear.",
     "the video is of high quality, and the view is very clear."),
    ("", ""),
    ("   ", ""),
    ("www.site.org/path?x=1 rest", "?x=1 rest"),
    ("%20encoded%21 text+with+plus", "encoded! text with plus"),
    ("<person> walks", "person walks"),
    ("&quot;hi&quot; there", '"hi" there'),
    ("a-b-c-d-e", "a b c d e"),
]


@pytest.mark.parametrize("raw,expected", REFERENCE_OUTPUTS)
def test_matches_reference_cleaner(raw, expected):
    assert clean_caption(raw) == expected


def test_helpers():
    assert strip_html("<p>a <i>b</i> &lt;c&gt;</p>") == "a b <c>"
    assert fix_text("\ufb02at \uff21\x07") == "flat A"
