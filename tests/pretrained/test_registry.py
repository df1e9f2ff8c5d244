import json

import pytest
import torch

import molnet
from molnet.errors import ModelFileError
from molnet.models import build_model, save_model
from molnet.pretrained import registry as reg


@pytest.fixture
def model_file(tmp_path):
    torch.manual_seed(0)
    model = build_model(
        {"name": "mpnn", "elements": ["H", "C", "O"], "r_max": 4.0, "num_channels": 8}, dtype=torch.float64
    )
    return save_model(model, tmp_path / "source" / "m.safetensors")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MOLNET_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_load_by_file_url_is_cached_and_verified(model_file, cache):
    digest = reg.sha256_of(model_file)
    url = f"{model_file.as_uri()}#sha256={digest}"
    model = molnet.load_model(url)
    cached = list(cache.iterdir())
    assert len(cached) == 1 and reg.sha256_of(cached[0]) == digest
    model_file.unlink()  # a second load uses the cache, no download
    assert molnet.load_model(url).elements == model.elements


def test_urls_without_checksum_ending_in_the_same_file_name_are_cached_apart(model_file, cache, tmp_path):
    torch.manual_seed(1)
    other = build_model({"name": "mpnn", "elements": ["Na", "Cl"], "r_max": 4.0}, dtype=torch.float64)
    other_file = save_model(other, tmp_path / "elsewhere" / "m.safetensors")  # same file name, other model
    assert molnet.load_model(model_file.as_uri()).elements == ["H", "C", "O"]
    assert molnet.load_model(other_file.as_uri()).elements == ["Na", "Cl"]
    assert len(list(cache.iterdir())) == 2
    model_file.unlink()  # each URL's first download is reused
    assert molnet.load_model(model_file.as_uri()).elements == ["H", "C", "O"]


def test_checksum_mismatch_deletes_download_and_keeps_good_cache(model_file, cache):
    good = reg.sha256_of(model_file)
    molnet.load_model(f"{model_file.as_uri()}#sha256={good}")
    before = {p.name: p.read_bytes() for p in cache.iterdir()}
    with pytest.raises(ModelFileError, match="checksum mismatch"):
        reg.download(model_file.as_uri(), "0" * 64)
    assert {p.name: p.read_bytes() for p in cache.iterdir()} == before  # nothing partial, good entry intact


@pytest.fixture
def short_server(model_file):
    """A local HTTP server that announces the model file's length and sends half of it."""
    import http.server
    import threading

    data = model_file.read_bytes()

    class Short(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Short)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/m.safetensors"
    server.shutdown()
    server.server_close()


def test_a_short_or_foreign_download_is_never_cached(model_file, cache, short_server, tmp_path):
    """Without a checksum, a download cut short (fewer bytes than announced) or a file that is not
    a molnet model (an HTML error page) is deleted with an error naming the URL, and a later load
    of the URL downloads again instead of reusing it."""
    with pytest.raises(ModelFileError, match=r"127.0.0.1:\d+/m.safetensors: the download ended after \d+ of \d+ bytes"):
        molnet.load_model(short_server)
    page = tmp_path / "served" / "h.safetensors"
    page.parent.mkdir()
    page.write_text("<html><body>404 not found</body></html>")
    for _ in range(2):
        with pytest.raises(ModelFileError, match=r"h.safetensors: the download is not a molnet model file \(not a"):
            molnet.load_model(page.as_uri())
    assert not cache.exists() or not list(cache.iterdir())
    page.write_bytes(model_file.read_bytes())  # the URL now serves the model: it is downloaded again
    assert molnet.load_model(page.as_uri()).elements == ["H", "C", "O"]
    # an unreadable entry already in the cache (no checksum to check it by) is fetched anew
    (entry,) = cache.iterdir()
    entry.write_text("<html>a page cached by an earlier version</html>")
    assert molnet.load_model(page.as_uri()).elements == ["H", "C", "O"]
    assert entry.read_bytes() == model_file.read_bytes()


def test_checksums_in_either_case_and_malformed_ones(model_file, cache, tmp_path):
    digest = reg.sha256_of(model_file)
    assert molnet.load_model(f"{model_file.as_uri()}#sha256={digest.upper()}").elements == ["H", "C", "O"]
    with pytest.raises(ModelFileError, match="sha256 'abc' is not 64 hexadecimal digits"):
        molnet.load_model(f"{model_file.as_uri()}#sha256=abc")
    with pytest.raises(ModelFileError, match="is a directory; name the model file"):
        molnet.load_model(tmp_path)


def test_registry_entries_by_name(model_file, cache, tmp_path, monkeypatch):
    entries = [
        {
            "name": "remote-test",
            "family": "mpnn",
            "elements": ["H", "C", "O"],
            "training_data": "none",
            "sha256": reg.sha256_of(model_file),
            "url": model_file.as_uri(),
        },
        {
            "name": "tampered",
            "family": "mpnn",
            "elements": ["H", "C", "O"],
            "training_data": "none",
            "sha256": "f" * 64,
            "url": model_file.as_uri(),
        },
    ]
    registry_file = tmp_path / "registry.json"
    registry_file.write_text(json.dumps(entries))
    monkeypatch.setattr(reg, "REGISTRY_FILE", registry_file)
    assert molnet.load_model("remote-test").elements == ["H", "C", "O"]
    with pytest.raises(ModelFileError, match="checksum mismatch"):
        molnet.load_model("tampered")


def test_shipped_models_verify_and_load():
    entries = reg.list_models()
    for name, entry in entries.items():
        path = reg.resolve(name)
        assert reg.sha256_of(path) == entry.sha256 and path.stat().st_size == entry.size_bytes
        model = molnet.load_model(name)
        assert model.elements == entry.elements and model.config["name"] == entry.family


def test_unknown_name():
    with pytest.raises(ModelFileError, match="neither a pretrained model name"):
        molnet.load_model("no-such-model")


def test_shipped_files_match_registry_and_readme():
    """Each shipped model file has the registry's sha256, and the README's table quotes it."""
    readme = (reg.PRETRAINED_DIR.parents[1] / "README.md").read_text()
    for name, entry in reg.list_models().items():
        if entry.file is None:
            continue
        assert reg.sha256_of(reg.PRETRAINED_DIR / entry.file) == entry.sha256, name
        row = next(line for line in readme.splitlines() if line.startswith(f"| `{name}`"))
        assert f"`{entry.sha256[:8]}…`" in row, name


def test_unknown_dtype_name_is_a_configuration_error():
    from molnet.errors import ConfigError

    with pytest.raises(ConfigError, match="float32"):
        molnet.load_model("mace-acac", dtype="fp64")
    with pytest.raises(ConfigError, match="dtype must be 'float32' or 'float64', got torch.float16"):
        molnet.load_model("mace-acac", dtype=torch.float16)
