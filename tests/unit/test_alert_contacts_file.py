"""`txmon alerts contacts-import`: a contacts file that cannot be read exactly is refused
with its line and the fix, before anything is written (no Cassandra needed to get there)."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from txmon.alerting.cli import alerts_app
from txmon.alerting.errors import AlertingConfigError


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"account,phone\n123456789,+919876543210\n", r"missing column\(s\) \['email'\]"),
        (b"account,phone,email\n12\n", r":2: account is not 9-18 digits"),  # a short line: no crash on its Nones
        (b"account,phone,email\n,+919876543210,\n", r":2: account is not 9-18 digits"),
        (b"account,phone,email\n123456789,+919876543210,a@b.in,x,y\n", r":2: more cells than the header"),
        (b"account,phone,email\n123456789,+91 98765,\n", r":2: phone must be E.164"),
        (b"account,phone,email\n123456789,,J\xfcrgen@b.de\n", r"cannot read it as UTF-8 CSV"),
    ],
)
def test_a_contacts_file_that_cannot_be_read_exactly_is_refused(tmp_path, content, error):
    path = tmp_path / "contacts.csv"
    path.write_bytes(content)
    result = CliRunner().invoke(alerts_app, ["contacts-import", str(path)])
    assert isinstance(result.exception, AlertingConfigError), result.output
    assert re.search(error, str(result.exception))
