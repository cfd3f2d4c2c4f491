import re
import shutil

from rag_assets.core.model_files import model_identity, resolve_model_dir


def _copy_of_bundled_model(folder):
    shutil.copytree(resolve_model_dir("all-MiniLM-L6-v2"), folder)
    return folder


def test_identity_is_the_model_name_and_a_hash_of_its_files(tmp_path):
    identity = model_identity("all-MiniLM-L6-v2")
    assert re.fullmatch(r"all-MiniLM-L6-v2-[0-9a-f]{16}", identity)
    copy = _copy_of_bundled_model(tmp_path / "all-MiniLM-L6-v2")
    assert model_identity(str(copy)) == identity  # same files, same name: where they lie does not count


def test_identity_changes_with_any_weight_or_config_file(tmp_path):
    copy = _copy_of_bundled_model(tmp_path / "model")
    before = model_identity(str(copy))
    (copy / "config.json").write_text((copy / "config.json").read_text() + "\n")
    assert model_identity(str(copy)) != before
