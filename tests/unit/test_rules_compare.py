"""bench.rules_compare refuses a rules file that does not exist, before starting anything."""

import pytest

from txmon.bench.rules_compare import main


def test_a_missing_rules_file_is_named_with_how_to_fix_it(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "nope.yaml"), "config/rules.yaml"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "nope.yaml not found" in err and "config/rules.yaml" in err
