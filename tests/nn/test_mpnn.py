from tests.battery import ModelBattery


class TestMPNN(ModelBattery):
    configs = [{"name": "mpnn", "num_channels": 16, "num_interactions": 2, "radial_MLP": [16]}]
