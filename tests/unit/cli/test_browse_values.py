"""How ``calib ls`` / ``diff`` print values (pure functions): different values never read alike."""

from __future__ import annotations

from helpers.cli.browse import NOT_RUN, NotRun, cell_texts, changed


def test_parameters_print_exactly():
    assert cell_texts([99.9, 99.999, 1e-05, "", [1, 5, 20], True, NOT_RUN], "exact") == [
        "99.9",
        "99.999",
        "1e-05",
        "''",
        "[1, 5, 20]",
        "true",
        "not run",
    ]


def test_numbers_take_the_digits_that_tell_them_apart():
    assert cell_texts([0.974, 0.974], "percent") == ["97.40%", "97.40%"]  # the report's 2 decimals
    assert cell_texts([0.97411, 0.97412], "percent") == ["97.411%", "97.412%"]
    assert cell_texts([1 / 0.61, 1 / 0.62, None, NOT_RUN], "speedup") == [
        "1.64x faster",
        "1.61x faster",
        "-",
        "not run",
    ]
    assert cell_texts([1 / 0.6, 0.5], "speedup") == ["1.7x faster", "2.0x slower"]
    assert cell_texts([0.123456, 0.123457], "number") == ["0.123456", "0.123457"]
    assert cell_texts([0.1234, 0.12345678], "number") == ["0.1234", "0.1235"]


def test_shortened_values_that_would_read_alike_print_whole():
    five, other = [1, 2, 3, 4, 5], [1, 2, 3, 4, 6]
    assert cell_texts([five, five], "number") == ["[5 items]", "[5 items]"]
    assert cell_texts([five, other], "number") == ["[1, 2, 3, 4, 5]", "[1, 2, 3, 4, 6]"]


def test_a_run_that_lacks_the_phase_is_no_difference():
    assert not changed([0.1, NOT_RUN, 0.1]) and not changed([NotRun("failed"), 3])
    assert changed([0.1, NOT_RUN, 0.10001]) and changed([None, 0.1])
