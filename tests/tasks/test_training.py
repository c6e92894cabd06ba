import json

from tasks.training import checkpoint_status, training_params, training_tags, write_checkpoint_status
from wsss_core.psa.cam import CamTrainConfig


def test_checkpoint_status_finds_finished_resumable_and_foreign_checkpoints(tmp_path):
    checkpoint = tmp_path / "model.pt"
    assert checkpoint_status(checkpoint, "k") == "fresh"
    checkpoint.write_bytes(b"weights")
    write_checkpoint_status(checkpoint, "k", finished=False)
    assert checkpoint_status(checkpoint, "k") == "resume"
    write_checkpoint_status(checkpoint, "k", finished=True)
    assert checkpoint_status(checkpoint, "k") == "finished"
    assert checkpoint_status(checkpoint, "other") == "fresh"  # another key's model is set aside
    assert (tmp_path / "model.previous.pt").read_bytes() == b"weights" and not checkpoint.exists()
    assert not (tmp_path / "model.pt.json").exists()


def test_training_params_read_like_the_config_and_the_weights_record():
    weights = {"backbone": "resnet18", "requested": "DEFAULT", "used": "none", "fallback": True, "note": "offline, sha 0123"}
    params = training_params("cam", weights, 12, CamTrainConfig.small(), round=1)
    assert params["network"] == "cam" and params["backbone"] == "resnet18" and params["epochs"] == 10
    assert params["weights"] == {"backbone": "resnet18", "requested": "DEFAULT", "used": "none", "fallback": True}
    assert params["n_images"] == 12 and params["round"] == 1 and params["crop_size"] == 128
    assert training_tags(weights) == {"weights.note": "offline, sha 0123"}
    json.dumps(params)  # saved as the run's config.json
