"""What every check shares: how a verdict is printed."""
from bnlessons.checks.common import LINE_WIDTH, Verdict, report


def test_a_long_verdict_prints_within_the_text_column_and_loses_no_word(capsys):
    message = ("the second BN does not see the first linear layer's output directly: "
               "check the order of the layers in forward, and look at "
               "https://example.org/a-very-long-address-that-cannot-be-broken-anywhere-at-all")
    verdict = report(Verdict("check_something", False, message), verbose=True)
    printed = capsys.readouterr().out.rstrip("\n").split("\n")
    assert len(printed) > 1 and printed[0].startswith("[FAIL] check_something: ")
    too_long = [line for line in printed if len(line) > LINE_WIDTH]
    assert too_long == [line for line in printed if " " not in line.strip()]  # the address
    assert all(line.startswith("    ") for line in printed[1:])
    assert " ".join(line.strip() for line in printed) == str(verdict)


def test_a_short_verdict_is_one_line(capsys):
    report(Verdict("check_x", True, "fine"), verbose=True)
    assert capsys.readouterr().out == "[PASS] check_x: fine\n"
