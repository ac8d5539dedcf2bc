"""Packing a bot version, checking what a worker receives, unpacking it by content address."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from agents.bots import BotPublishError, BundleError, bundle_from_folders, check_record, unpack
from agents.bots.bundle import version_of
from agents.bots.publisher import encode_version
from streams.codecs import AvroCodec


def make_bot(root: Path, reply: str = "Hello!") -> tuple[Path, Path]:
    bot, model = root / "mybot", root / "model"
    (bot / "knowledge").mkdir(parents=True)
    (bot / "flows.yml").write_text("flows:\n  greet:\n    steps: [say: utter_greet]\n")
    (bot / "responses.yml").write_text(f"responses:\n  utter_greet: ['{reply}']\n")
    (bot / "knowledge" / "faq.md").write_text("# Opening hours\n\n9 to 5.\n")
    (bot / ".git").mkdir()
    (bot / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (bot / "__pycache__").mkdir()
    (bot / "__pycache__" / "x.pyc").write_bytes(b"\0")
    model.mkdir()
    (model / "manifest.json").write_text('{"format": 2}')
    (model / "intent.onnx").write_bytes(bytes(range(256)) * 64)
    return bot, model


def test_a_version_packs_the_bot_and_its_model_and_nothing_else(tmp_path: Path) -> None:
    bot, model = make_bot(tmp_path)
    bundle = bundle_from_folders("acme", bot, model, now_ms=5, published_by="ops@host")
    assert sorted(bundle.files) == ["bot/flows.yml", "bot/knowledge/faq.md", "bot/responses.yml",
                                    "nlu/intent.onnx", "nlu/manifest.json"]
    assert bundle.name == "mybot" and bundle.tenant_id == "acme" and bundle.size > 16_000
    assert len(bundle.version) == 64


def test_the_version_is_the_content(tmp_path: Path) -> None:
    bot, model = make_bot(tmp_path)
    first = bundle_from_folders("acme", bot, model, now_ms=1)
    again = bundle_from_folders("other", bot, model, now_ms=2)
    assert first.version == again.version  # the same files: the same version, any tenant
    (bot / "responses.yml").write_text("responses:\n  utter_greet: ['Hi!']\n")
    assert bundle_from_folders("acme", bot, model).version != first.version
    # a file renamed with the same bytes is another version too
    files = dict(first.files)
    files["bot/renamed.yml"] = files.pop("bot/flows.yml")
    assert version_of(files) != first.version


def test_a_record_round_trips_and_checks(tmp_path: Path) -> None:
    bot, model = make_bot(tmp_path)
    bundle = bundle_from_folders("acme", bot, model, now_ms=7, published_by="ops@host")
    codec = AvroCodec("bot_version")
    value = encode_version(bundle, codec, 64 << 20, "bots")
    checked = check_record(codec.decode(value))
    assert checked == bundle


@pytest.mark.parametrize(("tenant", "bot_exists", "error"), [
    ("not a tenant", True, "invalid tenant id"),
    ("acme", False, "is not a folder"),
])
def test_packing_refuses_what_cannot_be_published(tmp_path: Path, tenant: str, bot_exists: bool,
                                                  error: str) -> None:
    bot, model = make_bot(tmp_path)
    with pytest.raises(BotPublishError, match=error):
        bundle_from_folders(tenant, bot if bot_exists else tmp_path / "nope", model)


def test_an_empty_model_folder_is_refused(tmp_path: Path) -> None:
    bot, _ = make_bot(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BotPublishError, match="has no files to publish"):
        bundle_from_folders("acme", bot, tmp_path / "empty")


def test_a_version_larger_than_the_topic_takes_is_refused_with_both_sizes(
        tmp_path: Path) -> None:
    bot, model = make_bot(tmp_path)
    bundle = bundle_from_folders("acme", bot, model)
    with pytest.raises(BotPublishError,
                       match=r"is [\d,]+ bytes; the bots topic takes records of up to 1,000"):
        encode_version(bundle, AvroCodec("bot_version"), 1000 + 64 * 1024, "bots")


def tampered(record: dict[str, Any], how: str) -> dict[str, Any]:
    bad = copy.deepcopy(record)
    files = bad["files"]
    if how == "checksum":
        files[0]["data"] = files[0]["data"] + b"!"
    elif how == "version":
        bad["bot_version"] = "0" * 64
    elif how in ("../escape", "/etc/passwd", "bot/../../x", "other/x", "bot", "bot\\x.yml",
                 "bot//x"):
        files[0]["path"] = how
    elif how == "twice":
        files.append(dict(files[0]))
    elif how == "no model":
        bad["files"] = [f for f in files if f["path"].startswith("bot/")]
    elif how == "tenant":
        bad["tenant_id"] = "bad/tenant"
    return bad


@pytest.mark.parametrize(("how", "error"), [
    ("checksum", "does not match its checksum"),
    ("version", "the files do not make that version"),
    ("../escape", "has an empty, '.' or '..' part"),
    ("/etc/passwd", "is absolute"),
    ("bot/../../x", "has an empty, '.' or '..' part"),
    ("bot//x", "has an empty, '.' or '..' part"),
    ("other/x", "is not under bot/ or nlu/"),
    ("bot", "is not under bot/ or nlu/"),
    ("bot\\x.yml", "backslash"),
    ("twice", "appears twice"),
    ("no model", "needs files under both bot/ and nlu/, has bot"),
    ("tenant", "invalid tenant id"),
])
def test_a_worker_refuses_a_record_that_is_not_whole_or_not_safe(
        tmp_path: Path, how: str, error: str) -> None:
    bot, model = make_bot(tmp_path)
    record = bundle_from_folders("acme", bot, model).to_record()
    with pytest.raises(BundleError, match=error) as raised:
        check_record(tampered(record, how))
    assert "of tenant" in str(raised.value)


def test_unpacking_writes_a_content_addressed_folder_once(tmp_path: Path) -> None:
    bot, model = make_bot(tmp_path)
    bundle = bundle_from_folders("acme", bot, model)
    root = tmp_path / "data" / "bots"
    unpacked = unpack(bundle, root)
    assert unpacked.folder == root / bundle.version
    assert (unpacked.bot_dir / "knowledge" / "faq.md").read_text() == "# Opening hours\n\n9 to 5.\n"
    assert (unpacked.model_dir / "intent.onnx").read_bytes() == (model / "intent.onnx").read_bytes()
    assert sorted(p.name for p in root.iterdir()) == [bundle.version]  # nothing left aside
    marker = unpacked.model_dir / "manifest.json"
    mtime = marker.stat().st_mtime_ns
    assert unpack(bundle, root) == unpacked  # again: the folder is kept as it is
    assert marker.stat().st_mtime_ns == mtime
