"""The evidence rule for calling a video file truncated (stream.media.truncation)."""

from stream.media.truncation import check_decoded


def test_a_complete_file_or_an_unknown_count_is_fine():
    assert check_decoded("a.mp4", 456, 30.0, 456, 15.17) == check_decoded("a.mkv", None, 30.0, 10, 0.3)
    assert not check_decoded("a.mp4", 456, 30.0, 456, 15.17).truncated


def test_one_frame_short_of_the_count_is_a_container_quirk():
    check = check_decoded("a.mp4", 456, 30.0, 455, 454 / 30)
    assert not check.truncated and check.message is None
    # Without timestamps (H.264 in AVI) the count alone decides, with the same tolerance.
    assert not check_decoded("a.avi", 444, 30.0, 442, None).truncated


def test_tolerance_grows_with_the_file():
    # 0.5 % of 10 000 frames is 50: 40 missing is within it, 60 is not.
    assert not check_decoded("a.mp4", 10_000, 30.0, 9_960, None).truncated
    assert check_decoded("a.mp4", 10_000, 30.0, 9_940, None).truncated


def test_decoding_that_stops_early_is_truncation():
    check = check_decoded("cut.mp4", 240, 30.0, 80, 79 / 30)
    assert check.truncated and "truncated or corrupt" in check.message and "5.3 s" in check.message
    assert check_decoded("corrupt.avi", 444, 30.0, 68, None).truncated  # no timestamps: by count


def test_timestamps_that_reach_the_end_overrule_a_nominal_count():
    # A variable-frame-rate file whose count is its duration × a nominal rate: the frames are all there.
    check = check_decoded("vfr.mkv", 900, 30.0, 700, 29.95)
    assert not check.truncated and "nominal count" in check.message
