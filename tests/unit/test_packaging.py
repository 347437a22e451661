"""Packaging: the editable install adds the project root to sys.path, it does not guess with a finder."""

from __future__ import annotations

from importlib.metadata import distributions


def test_editable_install_is_a_static_path_entry_not_a_meta_path_finder():
    # setuptools falls back to a meta path finder (and warns that folders named like the packages may
    # take precedence) when it cannot tell that the packages sit at the project's root.
    # The installed record, not the mailsync.egg-info a build may leave in the checkout.
    (record,) = [d.read_text("RECORD") for d in distributions(name="mailsync") if d.read_text("RECORD")]
    files = [line.split(",")[0] for line in (record or "").splitlines()]
    assert any(f.startswith("__editable__.mailsync") and f.endswith(".pth") for f in files), files
    assert not any("finder" in f for f in files), files
