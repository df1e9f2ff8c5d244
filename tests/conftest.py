import pytest
import torch

# Tests use small graphs, for which one intra-op thread is fastest; on a loaded 2-core machine two
# OpenMP threads can also stall each other for seconds per call.
torch.set_num_threads(1)


def pytest_generate_tests(metafunc):
    """Parametrise ModelBattery subclasses over their ``configs``."""
    configs = getattr(metafunc.cls, "configs", None)
    if configs and "model_config" in metafunc.fixturenames:
        ids = [c.get("id") or "-".join(f"{k}{v}" for k, v in c.items() if k != "name") or c["name"] for c in configs]
        metafunc.parametrize("model_config", [{k: v for k, v in c.items() if k != "id"} for c in configs], ids=ids)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield
